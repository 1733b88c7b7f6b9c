// Every layer of the model with its ledger, for both pages (imgcls serve, imgcls page): the
// input, each conv / pool layer with its feature maps, each dense layer as a strip of units,
// the logits and the softmax, every header with its kind, kernel, stride, padding, output
// shape, parameters (the formula and the count), multiply-adds and the running parameter
// total. The ledger is the export's metadata "layers" (imgcls/export/ledger.py); an older
// export without it gets its feature maps as before, without headers.
//
// Dense units are computed here from the site's weights.bin (the ONNX initializers, written
// by `imgcls page`) and the raw last feature map (or the normalised input, for an MLP); the
// logits so computed are checked against the model's own before anything is shown.
"use strict";

(() => {
  const FOLDED = new Set(["activation", "dropout"]); // shown in the header of the layer before
  const ACT = {
    ReLU: (v) => (v > 0 ? v : 0),
    Tanh: Math.tanh,
    Sigmoid: (v) => 1 / (1 + Math.exp(-v)),
    SiLU: (v) => v / (1 + Math.exp(-v)),
  };
  const fmt = (n) => Number(n).toLocaleString("en");

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function describe(e) {
    const bits = [e.op];
    if (e.kernel) bits.push(`${e.kernel[0]}×${e.kernel[1]}`);
    if (e.stride) bits.push(`stride ${e.stride[0]}`);
    if (e.padding) bits.push(`pad ${e.padding[0]}`);
    if (e.kind === "linear") bits.push(`${e.in_features}→${e.out_features}`);
    return bits.join(" ");
  }

  // The ledger grouped into what the page draws: one block per layer, activations and
  // dropout folded into the block before them.
  function blocksOf(ledger) {
    const blocks = [];
    for (const e of ledger) {
      if (FOLDED.has(e.kind) && blocks.length) {
        const b = blocks[blocks.length - 1];
        b.after.push(e);
        b.shape = e.output_shape;
        continue;
      }
      blocks.push({ entry: e, after: [], shape: e.output_shape });
    }
    return blocks;
  }

  // A feature map's layer: its label starts with the module's name ("features.0 + ReLU").
  const mapName = (label) => String(label).split(" ")[0];

  // One ImageData per tile size, shared by every tile drawn (putImageData copies it): a layer
  // of 48 tiles after every stroke allocates nothing.
  const pictures = new Map();

  function greys(ctx, w, h, values, lo, hi) {
    const key = `${w}x${h}`;
    if (!pictures.has(key)) pictures.set(key, ctx.createImageData(w, h));
    const img = pictures.get(key);
    const px = img.data;
    const span = hi > lo ? hi - lo : 1;
    for (let j = 0; j < w * h; j++) {
      const v = Math.round(((values[j] - lo) / span) * 255);
      px[4 * j] = v;
      px[4 * j + 1] = v;
      px[4 * j + 2] = v;
      px[4 * j + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  // Blue for negative weights, red for positive, white for zero; |w| / `top` the strength.
  function diverging(ctx, w, h, values, top) {
    const img = ctx.createImageData(w, h);
    for (let j = 0; j < w * h; j++) {
      const t = top > 0 ? Math.max(-1, Math.min(1, values[j] / top)) : 0;
      const off = Math.round(255 * (1 - Math.abs(t)));
      img.data[4 * j] = t > 0 ? 255 : off;
      img.data[4 * j + 1] = off;
      img.data[4 * j + 2] = t < 0 ? 255 : off;
      img.data[4 * j + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  function range(values) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of values) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    return [lo, hi];
  }

  // A map's float values: raw (the browser's runtime), else the server's per-channel bytes
  // scaled back with their min / max.
  function floatsOf(m) {
    if (m.values) return m.values;
    const [c, h, w] = m.shape;
    const n = h * w;
    const out = new Float32Array(c * n);
    for (let k = 0; k < c; k++) {
      const lo = m.min ? m.min[k] : 0;
      const hi = m.max ? m.max[k] : 255;
      for (let j = 0; j < n; j++) out[k * n + j] = lo + (m.bytes[k * n + j] / 255) * (hi - lo);
    }
    return out;
  }

  function create({ root, meta, classNames, weights, scaleRoot }) {
    const ledger = Array.isArray(meta.layers) ? meta.layers : null;
    // An ensemble export's ledger and maps are its first member's (members.0.*): their logits
    // are that member's, not the graph's averaged answer, so they are not held to it.
    const ensemble = meta.ensemble && Array.isArray(meta.ensemble.members) ? meta.ensemble : null;
    const maps = meta.features && Array.isArray(meta.feature_maps) ? meta.feature_maps : [];
    let scale = "channel";
    let last = null; // the answer drawn
    let units = {}; // dense layer name -> its units' values (after its activation)
    let denseNote = "";
    let denseIn = {}; // dense layer name -> its input vector

    root.replaceChildren();
    const tilesOf = new Map(); // feature map label -> {group, tiles}
    let inputCanvas = null; // the input, enlarged 4x, with a receptive field drawn on it
    let smallInput = null;
    let inspector = null;
    let blockList = [];
    let inspected = null; // what inspect() last found
    const strips = []; // dense blocks: {block, canvas, values}

    function mapGroup(m, block = null) {
      const [c, h, w] = m.shape;
      const group = el("figure", `fmap-layer fmap-${m.kind}`);
      group.dataset.label = m.label;
      const caption = el("figcaption", "", `${m.label} · ${m.kind} · ${c}×${h}×${w}`);
      const grid = el("div", "fmap-grid");
      const tiles = [];
      for (let k = 0; k < c; k++) {
        const tile = el("canvas", "fmap-tile");
        tile.width = w;
        tile.height = h;
        tile.dataset.channel = String(k);
        tile.setAttribute("role", "img");
        tile.setAttribute("aria-label", `${m.label}, channel ${k + 1} of ${c}`);
        if (block) {
          // hover a unit: its window, kernel and sum (the inspector below the input)
          tile.addEventListener("mousemove", (ev) => {
            const r = tile.getBoundingClientRect();
            const x = Math.min(w - 1, Math.floor(((ev.clientX - r.left) / r.width) * w));
            const y = Math.min(h - 1, Math.floor(((ev.clientY - r.top) / r.height) * h));
            inspect(block.entry.name, k, y, x);
          });
        }
        grid.append(tile);
        tiles.push(tile);
      }
      group.append(caption, grid);
      tilesOf.set(m.label, { group, tiles, map: m });
      if (block) block.map = m;
      return group;
    }

    if (!ledger) {
      for (const m of maps) root.append(mapGroup(m));
    } else {
      const blocks = blocksOf(ledger);
      const used = new Set();
      let total = 0;
      let macs = 0;
      const input = meta.input && meta.input.shape ? meta.input.shape.slice(1) : [1, 28, 28];
      const inBlock = el("section", "layer layer-input");
      inBlock.append(
        el(
          "h3",
          "layer-head",
          `input · ${input.join("×")} · pixels 0..1, normalised inside the graph: ` +
            `(x − ${Number(meta.mean).toFixed(4)}) / ${Number(meta.std).toFixed(4)}`,
        ),
      );
      const inRow = el("div", "inspect-row");
      inputCanvas = el("canvas", "inspect-input");
      inputCanvas.width = 4 * Number(input[2] || 28);
      inputCanvas.height = 4 * Number(input[1] || 28);
      inputCanvas.setAttribute("role", "img");
      inputCanvas.setAttribute("aria-label", "The input, with the hovered unit's receptive field");
      inspector = el("div", "inspector");
      inspector.append(el("p", "muted", "Hover a unit of a map or of a dense strip: its receptive field, its kernel and its sum."));
      inRow.append(inputCanvas, inspector);
      inBlock.append(inRow);
      root.append(inBlock);
      blockList = blocks;
      const lastLinear = ledger.map((e) => e.kind).lastIndexOf("linear");
      blocks.forEach((b) => {
        const e = b.entry;
        total += e.params;
        macs += e.macs;
        const logits = ledger.indexOf(e) === lastLinear;
        const sec = el("section", `layer layer-${e.kind}${logits ? " layer-logits" : ""}`);
        sec.dataset.name = e.name;
        const head = el("h3", "layer-head");
        const acts = b.after.filter((a) => a.kind === "activation").map((a) => ` + ${a.op}`).join("");
        const parts = [`${e.name}`, `${describe(e)}${acts}`, `→ ${b.shape.join("×")}`];
        if (e.params) parts.push(`params ${e.params_text} = ${fmt(e.params)}`);
        if (e.macs) parts.push(`${fmt(e.macs)} multiply-adds`);
        parts.push(`total ${fmt(total)} params`);
        head.textContent = (logits ? "logits · " : "") + parts.join(" · ");
        sec.append(head);
        for (const m of maps) {
          const names = [e.name, ...b.after.map((a) => a.name)];
          if (!used.has(m.label) && names.includes(mapName(m.label))) {
            sec.append(mapGroup(m, b));
            used.add(m.label);
          }
        }
        if (e.kind === "linear") {
          const n = e.out_features;
          const canvas = el("canvas", "dense-strip");
          canvas.width = n;
          canvas.height = 1;
          canvas.setAttribute("role", "img");
          canvas.setAttribute("aria-label", `${e.name}: ${n} units`);
          const strip = { block: b, canvas, values: null, logits, cells: [] };
          if (logits) {
            const row = el("div", "logit-row");
            for (let i = 0; i < n; i++) {
              const cell = el("span", "logit-cell");
              cell.append(el("b", "", classNames[i] ?? String(i)), el("span", "", "–"));
              row.append(cell);
              strip.cells.push(cell);
            }
            sec.append(row);
          } else {
            canvas.addEventListener("mousemove", (ev) => {
              const r = canvas.getBoundingClientRect();
              inspect(e.name, Math.min(n - 1, Math.floor(((ev.clientX - r.left) / r.width) * n)), 0, 0);
            });
            sec.append(canvas);
          }
          strips.push(strip);
        }
        root.append(sec);
      });
      for (const m of maps) if (!used.has(m.label)) root.append(mapGroup(m)); // taps of other layers
      const soft = el("section", "layer layer-softmax");
      soft.append(el("h3", "layer-head", "softmax · probabilities, summing to 1"));
      const srow = el("div", "logit-row");
      const scells = classNames.map((name) => {
        const cell = el("span", "logit-cell");
        cell.append(el("b", "", name), el("span", "", "–"));
        srow.append(cell);
        return cell;
      });
      soft.append(srow);
      root.append(soft);
      root.append(el("p", "layer-total muted", `${fmt(total)} parameters, ${fmt(macs)} multiply-adds per image`));
      strips.softmax = scells;
    }
    const note = el("p", "layer-note muted");
    root.append(note);

    if (scaleRoot) {
      scaleRoot.replaceChildren();
      scaleRoot.append(el("span", "", "Grey scale: "));
      for (const [mode, label] of [
        ["channel", "per channel"],
        ["layer", "per layer"],
        ["network", "whole network"],
      ]) {
        const lab = el("label", "scale-choice");
        const radio = el("input");
        radio.type = "radio";
        radio.name = "fmap-scale";
        radio.value = mode;
        radio.checked = mode === scale;
        radio.addEventListener("change", () => setScale(mode));
        lab.append(radio, ` ${label}`);
        scaleRoot.append(lab);
      }
    }

    // The dense units: from the last feature map (or the normalised input) through the linear
    // layers, in float32 as the graph; null where the page cannot (no weights, another op).
    function dense(answer) {
      if (!ledger || !weights) {
        return "they are drawn on the static site of imgcls page, which carries the weights";
      }
      const first = ledger.findIndex((e) => e.kind === "linear");
      if (first < 0) return "";
      let x;
      const want = ledger[first].in_features;
      if (answer.maps && answer.maps.length) {
        x = floatsOf(answer.maps[answer.maps.length - 1]);
        if (!answer.maps[answer.maps.length - 1].values) return "the server sends scaled maps";
      } else if (answer.input) {
        const mean = Math.fround(meta.mean);
        const std = Math.fround(meta.std);
        x = Float32Array.from(answer.input, (v) => Math.fround(Math.fround(Math.fround(v / 255) - mean) / std));
      }
      if (!x || x.length !== want) return `no input of ${want} values for ${ledger[first].name}`;
      const out = {};
      for (let i = first; i < ledger.length; i++) {
        const e = ledger[i];
        if (e.kind === "linear") {
          const W = weights.get(`net.${e.name}.weight`);
          const B = weights.get(`net.${e.name}.bias`);
          if (!W) return `no weights for ${e.name}`;
          denseIn[e.name] = x;
          const y = new Float32Array(e.out_features);
          for (let o = 0; o < e.out_features; o++) {
            let s = 0;
            const row = o * e.in_features;
            for (let k = 0; k < e.in_features; k++) s += W[row + k] * x[k];
            y[o] = s + (B ? B[o] : 0);
          }
          x = y;
          out[e.name] = x;
        } else if (e.kind === "activation") {
          const f = ACT[e.op];
          if (!f) return `the page does not compute ${e.op}`;
          x = Float32Array.from(x, f);
          out[ledger[i - 1].name] = x; // a layer's units after its activation
          out[e.name] = x;
        } else if (e.kind !== "dropout") {
          return `the page does not compute ${e.op}`;
        }
      }
      const logits = out[ledger[ledger.map((e) => e.kind).lastIndexOf("linear")].name];
      if (answer.logits && !ensemble) {
        let gap = 0;
        for (let i = 0; i < logits.length; i++) gap = Math.max(gap, Math.abs(logits[i] - answer.logits[i]));
        if (!(gap <= 1e-3)) return `the page's arithmetic is ${gap.toExponential(1)} off the model's logits`;
      }
      units = out;
      return "";
    }


    // ------------------------------------------------------------------ hover a unit
    const inputHW = () => [Number(meta.input.shape[2]) || 28, Number(meta.input.shape[3]) || 28];
    const maxAbs = (v) => v.reduce((a, x) => Math.max(a, Math.abs(x)), 0);

    function normInput() {
      const mean = Math.fround(meta.mean);
      const std = Math.fround(meta.std);
      return Float32Array.from(last.input, (v) => Math.fround(Math.fround(Math.fround(v / 255) - mean) / std));
    }

    function rawOf(block) {
      if (!last || !block || !block.map || !Array.isArray(last.maps)) return null;
      const m = last.maps.find((a) => a.label === block.map.label);
      return m && m.values ? m.values : null;
    }

    // The input of display block `i`: the map of the block before it, or the normalised
    // pixels for the first; {values, shape} or null where the page has no raw values.
    function inputOf(i) {
      if (i === 0) {
        if (!last || !last.input) return null;
        return { values: normInput(), shape: meta.input.shape.slice(1).map(Number), pixels: true };
      }
      const prev = blockList[i - 1];
      const values = rawOf(prev);
      return values ? { values, shape: prev.shape, block: prev } : null;
    }

    // Rows / columns of the input that unit (y, x) of display block i sees: through every
    // window (k, s, p) back to the pixels, [top, bottom] x [left, right], unclipped.
    function fieldOf(i, y, x) {
      let [top, bottom, left, right] = [y, y, x, x];
      for (let j = i; j >= 0; j--) {
        const e = blockList[j].entry;
        if (!e.kernel) continue;
        top = top * e.stride[0] - e.padding[0];
        bottom = bottom * e.stride[0] - e.padding[0] + e.kernel[0] - 1;
        left = left * e.stride[1] - e.padding[1];
        right = right * e.stride[1] - e.padding[1] + e.kernel[1] - 1;
      }
      return { top, bottom, left, right };
    }

    function drawInput(field) {
      if (!inputCanvas) return;
      const ctx = inputCanvas.getContext("2d");
      const [h, w] = inputHW();
      if (!smallInput) smallInput = new OffscreenCanvas(w, h); // the input at its own size
      const small = smallInput;
      const sctx = small.getContext("2d");
      if (last && last.input) greys(sctx, w, h, last.input, 0, 255);
      else sctx.clearRect(0, 0, w, h);
      ctx.imageSmoothingEnabled = false;
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, inputCanvas.width, inputCanvas.height);
      ctx.drawImage(small, 0, 0, inputCanvas.width, inputCanvas.height);
      if (field) {
        const sx = inputCanvas.width / w;
        const sy = inputCanvas.height / h;
        ctx.strokeStyle = "#ff9f1c";
        ctx.lineWidth = 2;
        ctx.strokeRect(field.left * sx + 1, field.top * sy + 1, (field.right - field.left + 1) * sx - 2, (field.bottom - field.top + 1) * sy - 2);
      }
    }

    // Tint the window (rows y0..y1, columns x0..x1) on every tile of a block's map; the
    // cell holding `mark` (channel, y, x) brighter.
    function tintWindow(block, y0, y1, x0, x1, only = null, mark = null) {
      drawMaps();
      const t = block && block.map ? tilesOf.get(block.map.label) : null;
      if (!t) return;
      t.tiles.forEach((tile, k) => {
        if (only !== null && k !== only) return;
        const ctx = tile.getContext("2d");
        const img = ctx.getImageData(0, 0, tile.width, tile.height);
        for (let y = Math.max(0, y0); y <= Math.min(tile.height - 1, y1); y++) {
          for (let x = Math.max(0, x0); x <= Math.min(tile.width - 1, x1); x++) {
            const j = 4 * (y * tile.width + x);
            const hit = mark && mark[0] === k && mark[1] === y && mark[2] === x;
            img.data[j] = hit ? 255 : Math.round(90 + 0.65 * img.data[j]);
            img.data[j + 1] = hit ? 40 : Math.round(0.55 * img.data[j + 1]);
            img.data[j + 2] = hit ? 40 : Math.round(0.2 * img.data[j + 2]);
          }
        }
        ctx.putImageData(img, 0, 0);
      });
    }

    function show(lines, canvases = []) {
      inspector.replaceChildren();
      for (const line of lines) inspector.append(el("p", "inspect-line", line));
      if (canvases.length) {
        const row = el("div", "inspect-kernels");
        for (const c of canvases) row.append(c);
        inspector.append(row);
      }
    }

    function kernelCanvas(values, w, h, top, label) {
      const c = el("canvas", "inspect-kernel");
      c.width = w;
      c.height = h;
      c.title = label;
      c.setAttribute("role", "img");
      c.setAttribute("aria-label", label);
      diverging(c.getContext("2d"), w, h, values, top);
      return c;
    }

    const f4 = (v) => (Math.abs(v) < 1e-4 && v !== 0 ? v.toExponential(2) : v.toFixed(4));

    // What unit (channel, y, x) of layer `name` computed, drawn in the inspector and returned
    // (the test hook's inspect()): for a dense layer `channel` is the unit.
    function inspect(name, channel, y, x) {
      if (!ledger || !inspector) return null;
      const i = blockList.findIndex((b) => b.entry.name === name);
      if (i < 0) return null;
      const block = blockList[i];
      const e = block.entry;
      const act = block.after.find((a) => a.kind === "activation");
      const f = act ? ACT[act.op] : null;
      let out = null;
      if (e.kind === "conv") out = inspectConv(i, block, e, act, f, channel, y, x);
      else if (e.kind === "pool") out = inspectPool(i, block, e, channel, y, x);
      else if (e.kind === "linear") out = inspectDense(block, e, act, f, channel);
      if (!out) show([`${name}: the page has no raw values for this unit here (the static site of imgcls page has them).`]);
      inspected = out;
      return out;
    }

    function inspectConv(i, block, e, act, f, co, y, x) {
      const input = inputOf(i);
      const W = weights && weights.get(`net.${e.name}.weight`);
      if (!input || !W || e.groups !== 1) return null;
      const B = weights.get(`net.${e.name}.bias`);
      const [cin, ih, iw] = input.shape;
      const [kh, kw] = e.kernel;
      const y0 = y * e.stride[0] - e.padding[0];
      const x0 = x * e.stride[1] - e.padding[1];
      let acc = 0;
      let padded = 0;
      for (let ci = 0; ci < cin; ci++) {
        for (let dy = 0; dy < kh; dy++) {
          for (let dx = 0; dx < kw; dx++) {
            const iy = y0 + dy;
            const ix = x0 + dx;
            const w = W[((co * cin + ci) * kh + dy) * kw + dx];
            if (iy < 0 || iy >= ih || ix < 0 || ix >= iw) {
              padded += 1;
              continue;
            }
            acc += w * input.values[(ci * ih + iy) * iw + ix];
          }
        }
      }
      const b = B ? B[co] : 0;
      const v = acc + b;
      const a = f ? f(v) : v;
      const raw = rawOf(block);
      const [, oh, ow] = block.shape;
      const held = raw ? raw[(co * oh + y) * ow + x] : null;
      if (held !== null && !(Math.abs(a - held) <= 1e-3 * (1 + Math.abs(held)))) {
        // the map is not this sum of the layer before's map (a norm or a residual sum in
        // between): say so rather than show a sum that is not the unit's
        show([`${e.name}: the page cannot rebuild this unit from the layer before (${f4(a)} against the map's ${f4(held)}); it shows units of plain conv stacks.`]);
        return { name: e.name, kind: "conv", channel: co, row: y, column: x, held, activated: a, rebuilt: false };
      }
      const field = fieldOf(i, y, x);
      const [H, Wd] = inputHW();
      const clipH = (v) => Math.max(0, Math.min(H - 1, v));
      const clipW = (v) => Math.max(0, Math.min(Wd - 1, v));
      drawInput(field);
      if (!input.pixels) tintWindow(input.block, y0, y0 + kh - 1, x0, x0 + kw - 1);
      else drawMaps();
      const kernel = W.subarray(co * cin * kh * kw, (co + 1) * cin * kh * kw);
      const top = maxAbs(kernel);
      const canvases = [];
      for (let ci = 0; ci < cin; ci++) {
        canvases.push(kernelCanvas(kernel.subarray(ci * kh * kw, (ci + 1) * kh * kw), kw, kh, top, `kernel ${co + 1}, input channel ${ci + 1}`));
      }
      const n = cin * kh * kw;
      show(
        [
          `${e.name}, channel ${co + 1}, row ${y}, column ${x}: its ${kh}×${kw} window at rows ${y0}..${y0 + kh - 1}, ` +
            `columns ${x0}..${x0 + kw - 1} of ${input.pixels ? "the normalised input" : input.block.entry.name}` +
            `${padded ? ` (${padded} of its ${n} inputs are padding zeros)` : ""}; it sees pixel rows ` +
            `${clipH(field.top)}..${clipH(field.bottom)}, columns ${clipW(field.left)}..${clipW(field.right)} (outlined).`,
          `Σ w·x over ${n} inputs (${cin}×${kh}×${kw}) = ${f4(acc)}; + b ${f4(b)} = ${f4(v)}` +
            (act ? ` → ${act.op} → ${f4(a)}` : "") +
            (held !== null ? `; the map holds ${f4(held)}` : ""),
          `Its kernel${cin > 1 ? `s, one per input channel (${cin})` : ""}: blue negative, red positive, white 0 (largest |w| ${f4(top)}).`,
        ],
        canvases,
      );
      return {
        name: e.name, kind: "conv", channel: co, row: y, column: x,
        window: { top: y0, left: x0, bottom: y0 + kh - 1, right: x0 + kw - 1 },
        field, terms: n, padded, sum: acc, bias: b, value: v, activated: a, held, rebuilt: true,
        kernel: Array.from(kernel),
      };
    }

    function inspectPool(i, block, e, c, y, x) {
      const input = inputOf(i);
      if (!input || input.pixels) return null;
      const [, ih, iw] = input.shape;
      const [kh, kw] = e.kernel;
      const y0 = y * e.stride[0] - e.padding[0];
      const x0 = x * e.stride[1] - e.padding[1];
      const values = [];
      let best = -Infinity;
      let at = null;
      let sum = 0;
      for (let dy = 0; dy < kh; dy++) {
        for (let dx = 0; dx < kw; dx++) {
          const iy = y0 + dy;
          const ix = x0 + dx;
          if (iy < 0 || iy >= ih || ix < 0 || ix >= iw) continue;
          const v = input.values[(c * ih + iy) * iw + ix];
          values.push(v);
          sum += v;
          if (v > best) {
            best = v;
            at = [iy, ix];
          }
        }
      }
      const max = e.op === "MaxPool2d";
      const value = max ? best : sum / (kh * kw);
      const raw = rawOf(block);
      const [, oh, ow] = block.shape;
      const held = raw ? raw[(c * oh + y) * ow + x] : null;
      const field = fieldOf(i, y, x);
      drawInput(field);
      tintWindow(input.block, y0, y0 + kh - 1, x0, x0 + kw - 1, c, max ? [c, ...at] : null);
      show([
        `${e.name}, channel ${c + 1}, row ${y}, column ${x}: the ${kh}×${kw} window at rows ${y0}..${y0 + kh - 1}, columns ${x0}..${x0 + kw - 1} of ${input.block.entry.name}, channel ${c + 1}.`,
        `${max ? "max" : "mean"} of [${values.map(f4).join(", ")}] = ${f4(value)}` +
          (max ? ` (row ${at[0]}, column ${at[1]}, marked)` : "") +
          (held !== null ? `; the map holds ${f4(held)}` : ""),
      ]);
      return {
        name: e.name, kind: "pool", channel: c, row: y, column: x,
        window: { top: y0, left: x0, bottom: y0 + kh - 1, right: x0 + kw - 1 },
        field, values, value, at: max ? at : null, held,
      };
    }

    function inspectDense(block, e, act, f, unit) {
      const x = denseIn[e.name];
      const W = weights && weights.get(`net.${e.name}.weight`);
      if (!x || !W) return null;
      const B = weights.get(`net.${e.name}.bias`);
      const row = W.subarray(unit * e.in_features, (unit + 1) * e.in_features);
      let acc = 0;
      for (let k = 0; k < e.in_features; k++) acc += row[k] * x[k];
      const b = B ? B[unit] : 0;
      const v = acc + b;
      const a = f ? f(v) : v;
      const held = units[e.name] ? units[e.name][unit] : null;
      const [h, w] = inputHW();
      const picture = e.in_features === h * w; // a unit on the pixels: its weights are a picture
      const top = maxAbs(row);
      const canvas = picture
        ? kernelCanvas(row, w, h, top, `${e.name} unit ${unit + 1}: its ${e.in_features} weights as ${h}×${w}`)
        : kernelCanvas(row, e.in_features, 1, top, `${e.name} unit ${unit + 1}: its ${e.in_features} weights`);
      canvas.classList.add(picture ? "inspect-picture" : "inspect-strip");
      drawInput(null);
      drawMaps();
      show(
        [
          `${e.name}, unit ${unit + 1} of ${e.out_features}: Σ w·x over its ${e.in_features} inputs = ${f4(acc)}; + b ${f4(b)} = ${f4(v)}` +
            (act ? ` → ${act.op} → ${f4(a)}` : "") +
            (held !== null ? `; the strip holds ${f4(held)}` : ""),
          picture
            ? `Its ${e.in_features} weights as the ${h}×${w} picture they weigh: the template this unit matches (red where ink raises it, blue where ink lowers it).`
            : `Its ${e.in_features} weights (blue negative, red positive).`,
        ],
        [canvas],
      );
      return { name: e.name, kind: "linear", unit, sum: acc, bias: b, value: v, activated: a, held, weights: Array.from(row) };
    }

    function drawMaps() {
      if (!last || !Array.isArray(last.maps)) return;
      const floats = last.maps.map(floatsOf);
      let net = [Infinity, -Infinity];
      if (scale === "network") {
        for (const f of floats) {
          const [lo, hi] = range(f);
          net = [Math.min(net[0], lo), Math.max(net[1], hi)];
        }
      }
      last.maps.forEach((m, li) => {
        const t = tilesOf.get(m.label);
        if (!t) return;
        const [c, h, w] = m.shape;
        const n = h * w;
        const layer = scale === "layer" ? range(floats[li]) : net;
        t.tiles.forEach((tile, k) => {
          const ctx = tile.getContext("2d");
          if (scale === "channel" && m.bytes) {
            greys(ctx, w, h, m.bytes.subarray(k * n, (k + 1) * n), 0, 255);
            return;
          }
          const v = floats[li].subarray(k * n, (k + 1) * n);
          const [lo, hi] = scale === "channel" ? range(v) : layer;
          greys(ctx, w, h, v, lo, hi);
        });
      });
    }

    function drawDense() {
      for (const s of strips) {
        const v = units[s.block.entry.name] || null;
        if (s.logits) {
          s.cells.forEach((cell, i) => {
            cell.lastChild.textContent = v ? v[i].toFixed(2) : "–";
          });
        } else {
          const ctx = s.canvas.getContext("2d");
          if (v) greys(ctx, v.length, 1, v, ...range(v));
          else ctx.clearRect(0, 0, s.canvas.width, 1);
        }
      }
      if (strips.softmax) {
        const p = last ? last.probabilities || [] : [];
        strips.softmax.forEach((cell, i) => {
          cell.lastChild.textContent = typeof p[i] === "number" ? `${(100 * p[i]).toFixed(1)} %` : "–";
        });
      }
    }

    function draw(answer) {
      last = answer;
      inspected = null;
      drawInput(null);
      units = {};
      denseIn = {};
      denseNote = ledger ? dense(answer) : "";
      note.textContent = [
        denseNote ? `Dense units not drawn: ${denseNote}.` : "",
        ensemble
          ? `These layers are the first of the ${ensemble.members.length} members of an ` +
            "ensemble; the probabilities are the average of all members' answers."
          : "",
      ]
        .filter(Boolean)
        .join(" ");
      drawMaps();
      drawDense();
    }

    function setScale(mode) {
      scale = ["channel", "layer", "network"].includes(mode) ? mode : "channel";
      if (scaleRoot) scaleRoot.querySelectorAll("input").forEach((r) => (r.checked = r.value === scale));
      drawMaps();
    }

    function clear() {
      last = null;
      units = {};
      for (const t of tilesOf.values()) for (const tile of t.tiles) tile.getContext("2d").clearRect(0, 0, tile.width, tile.height);
      drawDense();
    }

    return {
      draw,
      clear,
      setScale,
      fits: (answerMaps) => answerMaps.every((m) => tilesOf.has(m.label) && tilesOf.get(m.label).tiles.length === m.shape[0]),
      layers: () =>
        (ledger || []).map((e) => ({
          name: e.name,
          kind: e.kind,
          op: e.op,
          shape: e.output_shape,
          params: e.params,
          params_text: e.params_text,
          macs: e.macs,
          kernel: e.kernel || null,
          stride: e.stride || null,
          padding: e.padding || null,
        })),
      units: () => Object.fromEntries(Object.entries(units).map(([k, v]) => [k, Array.from(v)])),
      inspect,
      scale: () => scale,
    };
  }

  // The weights the site carries: weights.bin (float32, little-endian) and its index.
  async function loadWeights(index) {
    if (!index || !index.file || !index.tensors) return null;
    const resp = await fetch(index.file);
    if (!resp.ok) throw new Error(`${index.file}: ${resp.status} ${resp.statusText}`.trim());
    const all = new Float32Array(await resp.arrayBuffer());
    const out = new Map();
    for (const [name, t] of Object.entries(index.tensors)) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      out.set(name, all.subarray(t.offset, t.offset + n));
    }
    return out;
  }

  window.imgclsLayers = { create, loadWeights, blocksOf, greys, diverging };
})();
