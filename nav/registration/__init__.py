"""Registration: pure functions that align the preop model with the patient and say how well.

Each method returns a frozen result with the transform (or deformation) and its
quality (ARCHITECTURE.md, section Registration).
"""
