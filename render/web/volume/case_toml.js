// The subset of TOML a case bundle's case.toml uses (nav/case.py, nav/case_build/build.py):
// `key = value` with strings, numbers, booleans and arrays (one or several lines), [table]
// and [[array of tables]], comments. Anything else is refused with the line number.

function stripComment(line) {
  let inString = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '\\' && inString) { i++; continue; }
    if (c === '"') inString = !inString;
    if (c === '#' && !inString) return line.slice(0, i);
  }
  return line;
}

function balance(text) {
  let depth = 0, inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && inString) { i++; continue; }
    if (c === '"') inString = !inString;
    else if (!inString && c === '[') depth++;
    else if (!inString && c === ']') depth--;
  }
  return depth;
}

export function parseCaseToml(text) {
  const root = {};
  let table = root;
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    let line = stripComment(lines[n]).trim();
    if (!line) continue;
    let match = line.match(/^\[\[\s*([A-Za-z0-9_-]+)\s*\]\]$/);
    if (match) {
      root[match[1]] = root[match[1]] || [];
      table = {};
      root[match[1]].push(table);
      continue;
    }
    match = line.match(/^\[\s*([A-Za-z0-9_-]+)\s*\]$/);
    if (match) {
      table = root[match[1]] = {};
      continue;
    }
    match = line.match(/^([A-Za-z0-9_-]+)\s*=\s*(.*)$/);
    if (!match) throw new Error(`case.toml line ${n + 1}: not key = value: ${line}`);
    let value = match[2];
    while (balance(value) > 0 && n + 1 < lines.length) value += ' ' + stripComment(lines[++n]).trim();
    value = value.replace(/,\s*\]/g, ']');
    try {
      table[match[1]] = JSON.parse(value);
    } catch (error) {
      throw new Error(`case.toml line ${n + 1}: value not understood: ${value}`);
    }
  }
  return root;
}
