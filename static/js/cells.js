// The disk map's cells, without the drawing: the painting rule of lab/nbd/diskmap.py (`Cells`),
// for a replay of a run's trace. No DOM here (tests/test_diskmap_js.py runs it under Node).

// kind in the trace -> the cell's letter
export const CODES = {
  data: "D", "zero-write": "W", "prezero-write": "P", zero: "Z", prezero: "p", trim: "T", refused: "R", status: "S",
  untouched: ".",
};
const PAINTS = new Set(["D", "W", "P", "Z", "p", "T"]); // the kinds that change what a cell holds
const SUB = 64; // sub-cells per cell
const ORDER = "DWPZpT."; // of two kinds covering a cell equally, the main one: data first

export function unrle(text) {
  let out = "";
  let n = "";
  for (const ch of text || "") {
    if (ch >= "0" && ch <= "9") n += ch;
    else { out += ch.repeat(n ? parseInt(n, 10) : 1); n = ""; }
  }
  return out;
}

export function cellSizeFor(size) {
  let cell = 4096;
  while (cell * 512 < size) cell *= 2;
  return cell;
}

// SUB sub-cells per cell; a cell's main kind covers most of it, its second kind is another it
// holds (the main one again when it holds one); marks are "R" where a fast zero was refused.
export class Cells {
  constructor(size, cellSize = cellSizeFor(size)) {
    this.cellSize = cellSize;
    this.n = Math.ceil(size / cellSize);
    this.sub = Math.max(1, cellSize / SUB);
    this.fine = new Array(this.n * SUB).fill(".");
    this.main = new Array(this.n).fill(".");
    this.second = new Array(this.n).fill(".");
    this.marks = new Array(this.n).fill(".");
    this.dirty = new Set();
  }

  // true when the row changed what the cells hold or mark
  paint(row) {
    const code = CODES[row.kind];
    if (!(row.count > 0)) return false;
    if (code === "R") {
      const last = Math.min(this.n, Math.ceil((row.offset + row.count) / this.cellSize));
      for (let i = Math.floor(row.offset / this.cellSize); i < last; i++) this.marks[i] = "R";
      return true;
    }
    if (!PAINTS.has(code)) return false;
    const first = Math.floor(row.offset / this.sub);
    const last = Math.min(this.fine.length, Math.ceil((row.offset + row.count) / this.sub));
    if (last <= first) return false;
    this.fine.fill(code, first, last);
    for (let i = Math.floor(first / SUB); i <= Math.floor((last - 1) / SUB); i++) this.dirty.add(i);
    return true;
  }

  layers() {
    for (const i of this.dirty) {
      const counts = new Map();
      for (let j = i * SUB; j < (i + 1) * SUB; j++) counts.set(this.fine[j], (counts.get(this.fine[j]) || 0) + 1);
      const kinds = [...counts].sort((a, b) => b[1] - a[1] || ORDER.indexOf(a[0]) - ORDER.indexOf(b[0])).map((k) => k[0]);
      this.main[i] = kinds[0];
      this.second[i] = kinds[1] || kinds[0];
    }
    this.dirty.clear();
    return { cells: this.main, under: this.second, marks: this.marks };
  }
}
