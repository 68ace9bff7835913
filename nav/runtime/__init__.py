"""nav.runtime."""
