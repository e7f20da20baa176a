// The fleet as a canvas grid: one cell per node while cells of at least
// 4 px fit, else one 2 px "pixel" per block of consecutive nodes (by id),
// coloured by the worst state in it. Only blocks whose nodes changed are
// redrawn (draw() is called at most once per animation frame by the page);
// a new snapshot or a resize redraws everything through one ImageData.

// Per state name: its colour (as in style.css) and how bad it is (the
// worst state of a block colours it).
export const STATES = {
  up: { color: '#2fa65a', severity: 0 },
  left: { color: '#5c8fd6', severity: 1 },
  unseen: { color: '#5a6270', severity: 2 },
  suspect: { color: '#e3b341', severity: 3 },
  flapping: { color: '#b46cf0', severity: 4 },
  down: { color: '#e5484d', severity: 5 },
};

const MAX_CELL = 24; // css px, gap included
const MIN_CELL = 4; // below this, blocks
const BLOCK_PX = 2; // css px per block when aggregated
// The overlay (hover and selection outlines) overhangs the grid by this
// much on every side, so that outlines of edge cells are not cut.
const OVERHANG = 4; // css px

export class Grid {
  constructor(canvas, overlay) {
    this.canvas = canvas;
    this.overlay = overlay;
    this.context = canvas.getContext('2d');
    this.overlayContext = overlay.getContext('2d');
    this.states = new Uint8Array(0);
    this.codes = [];
    this.runFirst = [];
    this.runStart = [];
    this.selected = -1;
    this.hovered = -1;
    this.load([], new Uint8Array(0), []);
  }

  // A snapshot: the ids as [first, count] runs (ascending), one state code
  // per node, and the state name of each code.
  load(runs, states, codes) {
    this.runFirst = runs.map(([first]) => first);
    this.runStart = [];
    let start = 0;
    for (const [, count] of runs) {
      this.runStart.push(start);
      start += count;
    }
    this.states = states;
    this.codes = codes;
    this.severity = Uint8Array.from(codes, (name) => (STATES[name] ?? STATES.unseen).severity);
    this.colors = codes.map((name) => (STATES[name] ?? STATES.unseen).color);
    this.rgba = Uint32Array.from(this.colors, rgba);
    this.layout();
  }

  get nodes() {
    return this.states.length;
  }

  // The index of node `id` in the snapshot, or -1.
  indexOf(id) {
    const first = this.runFirst;
    let lo = 0;
    let hi = first.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (first[mid] <= id) lo = mid + 1;
      else hi = mid - 1;
    }
    if (hi < 0) return -1;
    const index = this.runStart[hi] + (id - first[hi]);
    const end = hi + 1 < this.runStart.length ? this.runStart[hi + 1] : this.nodes;
    return index < end ? index : -1;
  }

  // The id of the node at `index`.
  idAt(index) {
    const start = this.runStart;
    let lo = 0;
    let hi = start.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (start[mid] <= index) lo = mid;
      else hi = mid - 1;
    }
    return this.runFirst[lo] + (index - start[lo]);
  }

  // Sizes the grid to its box: cells if they fit, else blocks. At most
  // 28% of the window's height, so that the whole page (counts, lists,
  // plots) fits one screen.
  layout() {
    const width = Math.max(120, this.canvas.parentElement.clientWidth);
    const maxHeight = Math.round(Math.min(360, Math.max(140, window.innerHeight * 0.28)));
    const nodes = Math.max(1, this.nodes);
    const side = Math.min(MAX_CELL, Math.floor(Math.sqrt((width * maxHeight) / nodes)));
    if (side >= MIN_CELL) {
      this.mode = 'cells';
      this.pitch = side;
      this.size = side - 1;
      this.perBlock = 1;
    } else {
      this.mode = 'blocks';
      this.pitch = BLOCK_PX;
      this.size = BLOCK_PX;
      const room = Math.floor(width / BLOCK_PX) * Math.floor(maxHeight / BLOCK_PX);
      this.perBlock = Math.ceil(nodes / room);
    }
    this.cols = Math.max(1, Math.floor(width / this.pitch));
    this.blocks = Math.ceil(this.nodes / this.perBlock);
    this.rows = Math.max(1, Math.ceil(this.blocks / this.cols));
    this.dpr = Math.max(1, Math.round(window.devicePixelRatio || 1));
    const cssWidth = Math.min(width, this.cols * this.pitch);
    const cssHeight = this.rows * this.pitch;
    for (const [canvas, around] of [
      [this.canvas, 0],
      [this.overlay, OVERHANG],
    ]) {
      canvas.width = (cssWidth + 2 * around) * this.dpr;
      canvas.height = (cssHeight + 2 * around) * this.dpr;
      canvas.style.width = `${cssWidth + 2 * around}px`;
      canvas.style.height = `${cssHeight + 2 * around}px`;
    }
    this.overlay.style.left = `${-OVERHANG}px`;
    this.overlay.style.top = `${-OVERHANG}px`;
    this.dirty = new Uint8Array(this.blocks);
    this.dirtyList = [];
    this.everything = true;
    this.drawOverlay();
  }

  // Sets node `index` to state `code`; returns its previous code.
  set(index, code) {
    const old = this.states[index];
    if (old !== code) {
      this.states[index] = code;
      const block = Math.floor(index / this.perBlock);
      if (!this.dirty[block]) {
        this.dirty[block] = 1;
        this.dirtyList.push(block);
      }
    }
    return old;
  }

  // The index of the worst node of `block`.
  worstIndex(block) {
    const from = block * this.perBlock;
    const to = Math.min(this.nodes, from + this.perBlock);
    const { states, severity } = this;
    let worst = from;
    for (let i = from + 1; i < to; i++) {
      if (severity[states[i]] > severity[states[worst]]) worst = i;
    }
    return worst;
  }

  // Redraws what changed since the last call (everything after a load or
  // a resize); returns the number of blocks drawn.
  draw() {
    if (this.everything) return this.drawAll();
    const list = this.dirtyList;
    if (list.length === 0) return 0;
    const { context, dpr, states } = this;
    const pitch = this.pitch * dpr;
    const size = this.size * dpr;
    // Group by colour: one fillStyle per state.
    const byCode = this.colors.map(() => []);
    for (const block of list) {
      this.dirty[block] = 0;
      byCode[states[this.worstIndex(block)]].push(block);
    }
    byCode.forEach((blocks, code) => {
      if (blocks.length === 0) return;
      context.fillStyle = this.colors[code];
      for (const block of blocks) {
        context.fillRect((block % this.cols) * pitch, Math.floor(block / this.cols) * pitch, size, size);
      }
    });
    const drawn = list.length;
    this.dirtyList = [];
    return drawn;
  }

  drawAll() {
    const { canvas, context, dpr, states } = this;
    const width = canvas.width;
    const image = context.createImageData(width, canvas.height);
    const pixels = new Uint32Array(image.data.buffer);
    const pitch = this.pitch * dpr;
    const size = this.size * dpr;
    for (let block = 0; block < this.blocks; block++) {
      const color = this.rgba[states[this.worstIndex(block)]];
      const x = (block % this.cols) * pitch;
      const y = Math.floor(block / this.cols) * pitch;
      for (let dy = 0; dy < size; dy++) {
        const row = (y + dy) * width + x;
        pixels.fill(color, row, row + size);
      }
    }
    context.putImageData(image, 0, 0);
    this.dirty.fill(0);
    this.dirtyList = [];
    this.everything = false;
    return this.blocks;
  }

  // The block under css pixel (x, y) of the overlay, or -1.
  blockAt(x, y) {
    const col = Math.floor((x - OVERHANG) / this.pitch);
    const row = Math.floor((y - OVERHANG) / this.pitch);
    if (col < 0 || col >= this.cols || row < 0) return -1;
    const block = row * this.cols + col;
    return block < this.blocks ? block : -1;
  }

  // The nodes of `block`: [first index, end index).
  span(block) {
    const from = block * this.perBlock;
    return [from, Math.min(this.nodes, from + this.perBlock)];
  }

  // Counts by state name of the nodes in [from, to).
  countsIn(from, to) {
    const counts = {};
    for (let i = from; i < to; i++) {
      const name = this.codes[this.states[i]];
      counts[name] = (counts[name] ?? 0) + 1;
    }
    return counts;
  }

  // Blocks by the state that colours them (what the canvas should show).
  blocksByWorst() {
    const counts = {};
    for (let block = 0; block < this.blocks; block++) {
      const name = this.codes[this.states[this.worstIndex(block)]];
      counts[name] = (counts[name] ?? 0) + 1;
    }
    return counts;
  }

  select(index) {
    this.selected = index;
    this.drawOverlay();
  }

  hover(block) {
    if (block === this.hovered) return;
    this.hovered = block;
    this.drawOverlay();
  }

  // The selected node's block outlined, the hovered one lightly.
  drawOverlay() {
    const { overlayContext: context, dpr } = this;
    context.clearRect(0, 0, this.overlay.width, this.overlay.height);
    const outline = (block, color, width) => {
      if (block < 0 || block >= this.blocks) return;
      const pitch = this.pitch * dpr;
      const around = (width / 2 + 1) * dpr;
      const origin = OVERHANG * dpr;
      context.strokeStyle = color;
      context.lineWidth = width * dpr;
      context.strokeRect(
        origin + (block % this.cols) * pitch - around,
        origin + Math.floor(block / this.cols) * pitch - around,
        this.size * dpr + 2 * around,
        this.size * dpr + 2 * around,
      );
    };
    outline(this.hovered, '#ffffff88', 1);
    if (this.selected >= 0) outline(Math.floor(this.selected / this.perBlock), '#ffffff', 2);
  }
}

// '#rrggbb' as a little-endian RGBA pixel.
function rgba(hex) {
  const value = parseInt(hex.slice(1), 16);
  const [r, g, b] = [(value >> 16) & 255, (value >> 8) & 255, value & 255];
  return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
}
