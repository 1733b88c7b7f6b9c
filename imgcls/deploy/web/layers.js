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

  function greys(ctx, w, h, values, lo, hi) {
    const img = ctx.createImageData(w, h);
    const span = hi > lo ? hi - lo : 1;
    for (let j = 0; j < w * h; j++) {
      const v = Math.round(((values[j] - lo) / span) * 255);
      img.data[4 * j] = v;
      img.data[4 * j + 1] = v;
      img.data[4 * j + 2] = v;
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
    const maps = meta.features && Array.isArray(meta.feature_maps) ? meta.feature_maps : [];
    let scale = "channel";
    let last = null; // the answer drawn
    let units = {}; // dense layer name -> its units' values (after its activation)
    let denseNote = "";

    root.replaceChildren();
    const tilesOf = new Map(); // feature map label -> {group, tiles}
    const strips = []; // dense blocks: {block, canvas, values}

    function mapGroup(m) {
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
        grid.append(tile);
        tiles.push(tile);
      }
      group.append(caption, grid);
      tilesOf.set(m.label, { group, tiles, map: m });
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
      root.append(inBlock);
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
            sec.append(mapGroup(m));
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
      if (answer.logits) {
        let gap = 0;
        for (let i = 0; i < logits.length; i++) gap = Math.max(gap, Math.abs(logits[i] - answer.logits[i]));
        if (!(gap <= 1e-3)) return `the page's arithmetic is ${gap.toExponential(1)} off the model's logits`;
      }
      units = out;
      return "";
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
      units = {};
      denseNote = ledger ? dense(answer) : "";
      note.textContent = denseNote ? `Dense units not drawn: ${denseNote}.` : "";
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

  window.imgclsLayers = { create, loadWeights, blocksOf };
})();
