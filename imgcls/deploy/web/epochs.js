// Watch it learn (imgcls page --epochs): the framed input through every snapshot a run kept
// (imgcls fit --snapshots.epochs), an epoch slider choosing which one the panel shows (its
// first-layer kernels, its feature maps, its probabilities), and the run's curves beside it
// with the chosen epoch marked. Every snapshot runs once per stroke, so the slider re-runs
// nothing. Browser runtime only: the snapshots are files of the static site.
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const MAX_TEMPLATES = 16; // an MLP's first-layer units drawn as 28x28 templates

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  const after = (n) => (n === 0 ? "before training" : `after ${n} epoch${n === 1 ? "" : "s"}`);

  function tile(w, h, cls) {
    const c = el("canvas", cls);
    c.width = w;
    c.height = h;
    return c;
  }

  // the layer panel's pictures: grey (lo black, hi white) and diverging (blue -, red +)
  const greys = (canvas, values, lo, hi) =>
    window.imgclsLayers.greys(canvas.getContext("2d"), canvas.width, canvas.height, values, lo, hi);
  const diverging = (canvas, values, top) =>
    window.imgclsLayers.diverging(canvas.getContext("2d"), canvas.width, canvas.height, values, top);

  const maxAbs = (v) => v.reduce((a, x) => Math.max(a, Math.abs(x)), 0);

  // The first layer's weights of one snapshot as pictures: a conv layer's kernels (one per
  // output channel, the input channels side by side), or an MLP's first units as templates.
  function firstLayer(meta, weights) {
    const layers = Array.isArray(meta.layers) ? meta.layers : [];
    const first = layers.find((e) => e.kind === "conv" || e.kind === "linear");
    const W = first && weights ? weights.get(`net.${first.name}.weight`) : null;
    if (!W) return null;
    if (first.kind === "conv") {
      const [kh, kw] = first.kernel;
      const per = first.in_channels * kh * kw;
      const out = [];
      for (let c = 0; c < first.out_channels; c++) out.push(W.subarray(c * per, (c + 1) * per));
      return { name: first.name, kind: "conv", w: kw * first.in_channels, h: kh, kernel: [kh, kw], tiles: out };
    }
    const [, ch, hh, ww] = (meta.input && meta.input.shape) || [0, 1, 28, 28];
    const n = Number(ch) * Number(hh) * Number(ww);
    if (W.length % n !== 0) return null;
    const out = [];
    for (let u = 0; u < Math.min(W.length / n, MAX_TEMPLATES); u++) out.push(W.subarray(u * n, (u + 1) * n));
    return { name: first.name, kind: "linear", w: Number(ww), h: Number(hh) * Number(ch), tiles: out };
  }

  // A conv kernel of several input channels, laid side by side: (in, kh, kw) -> kh x (in*kw)
  function sideBySide(k, inCh, kh, kw) {
    const out = new Float32Array(k.length);
    for (let c = 0; c < inCh; c++)
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++) out[i * inCh * kw + c * kw + j] = k[(c * kh + i) * kw + j];
    return out;
  }

  async function create({ root, meta, classNames, size }) {
    const spec = meta.epochs;
    const ort = window.ort;
    const opts = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    const snaps = [];
    for (const s of spec.snapshots) {
      const session = await ort.InferenceSession.create(s.model, opts);
      const weights = await window.imgclsLayers.loadWeights(s.weights);
      snaps.push({ ...s, session, first: firstLayer(meta, weights) });
    }
    // One colour scale for a layer's kernels over all the snapshots, so that growing weights
    // look like growing weights.
    const kernelTop = Math.max(0, ...snaps.map((s) => (s.first ? Math.max(...s.first.tiles.map(maxAbs)) : 0)));
    let chosen = snaps.length - 1;
    let results = null; // per snapshot {probabilities, logits, label, maps} for the input now
    let pixels = null;

    // ------------------------------------------------------------------ the panel
    root.replaceChildren();
    const top = el("div", "epochs-top");
    const controls = el("div", "epochs-controls");
    const sliderLabel = el("label", "epochs-slider-label");
    sliderLabel.htmlFor = "epochs-slider";
    const slider = el("input");
    slider.type = "range";
    slider.id = "epochs-slider";
    slider.min = "0";
    slider.max = String(snaps.length - 1);
    slider.step = "1";
    slider.value = String(chosen);
    const ticks = el("div", "epochs-ticks");
    snaps.forEach((s, i) => {
      const b = el("button", "epochs-tick", String(s.epoch));
      b.type = "button";
      b.title = after(s.epoch);
      b.addEventListener("click", () => choose(i));
      ticks.append(b);
    });
    const heading = el("p", "epochs-now");
    controls.append(sliderLabel, slider, ticks, heading);
    sliderLabel.textContent = "Epoch";
    const curves = el("div", "epochs-curves");
    top.append(controls, curves);
    const bars = el("ol", "bars epochs-bars");
    bars.setAttribute("aria-label", "Probability of each class at the chosen epoch");
    const barEls = classNames.map((name, i) => {
      const li = el("li", "bar");
      li.dataset.class = String(i);
      li.dataset.probability = "0";
      const fill = el("span", "bar-fill");
      const track = el("span", "bar-track");
      track.append(fill);
      li.append(el("span", "bar-label", name), track, el("span", "bar-value", "–"));
      bars.append(li);
      return li;
    });
    const kernels = el("figure", "epochs-kernels");
    const maps = el("div", "epochs-maps");
    const body = el("div", "epochs-body");
    const side = el("div", "epochs-side");
    side.append(bars);
    body.append(side, kernels);
    root.append(top, body, maps);
    slider.addEventListener("input", () => choose(Number(slider.value)));

    // ------------------------------------------------------------------ curves
    // Loss and accuracy per epoch (x: epochs finished), training dashed, validation solid, the
    // snapshots' epochs ticked and the chosen one marked.
    const W = 260;
    const H = 150;
    const PAD = { l: 40, r: 8, t: 18, b: 24 };
    const markers = [];
    function plot(title, names, fmt) {
      const series = names.map((n) => [n, spec.curves[n]]).filter(([, c]) => c && c.values.length);
      const s = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "epochs-plot", role: "img" });
      s.setAttribute("aria-label", title);
      const xs = [0, ...snaps.map((p) => p.epoch), ...series.flatMap(([, c]) => c.epochs)];
      const ys = series.flatMap(([, c]) => c.values);
      const x1 = Math.max(1, ...xs);
      let y0 = ys.length ? Math.min(...ys) : 0;
      let y1 = ys.length ? Math.max(...ys) : 1;
      if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 0.5, y1 + 0.5];
      const X = (e) => PAD.l + (e / x1) * (W - PAD.l - PAD.r);
      const Y = (v) => PAD.t + (1 - (v - y0) / (y1 - y0)) * (H - PAD.t - PAD.b);
      s.append(svg("line", { x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: "axis" }));
      s.append(svg("line", { x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: "axis" }));
      const label = (x, y, text, anchor) => {
        const t = svg("text", { x, y, "text-anchor": anchor || "middle", class: "tick" });
        t.textContent = text;
        s.append(t);
      };
      label(PAD.l, 12, title, "start");
      for (const p of snaps) label(X(p.epoch), H - 8, String(p.epoch));
      label(PAD.l - 4, Y(y1) + 4, fmt(y1), "end");
      label(PAD.l - 4, Y(y0) + 4, fmt(y0), "end");
      for (const [name, c] of series) {
        const d = c.epochs.map((e, i) => `${i ? "L" : "M"}${X(e).toFixed(1)},${Y(c.values[i]).toFixed(1)}`).join("");
        s.append(svg("path", { d, class: `curve ${name.startsWith("val") ? "val" : "train"}` }));
        c.epochs.forEach((e, i) => s.append(svg("circle", { cx: X(e), cy: Y(c.values[i]), r: 2.5, class: `dot ${name.startsWith("val") ? "val" : "train"}` })));
      }
      if (!series.length) label(W / 2, H / 2, "no curves in metrics.csv");
      const mark = svg("line", { y1: PAD.t, y2: H - PAD.b, class: "marker" });
      s.append(mark);
      markers.push((e) => {
        mark.setAttribute("x1", X(e));
        mark.setAttribute("x2", X(e));
      });
      const legend = el(
        "p",
        "epochs-legend muted",
        series.map(([n]) => (n.startsWith("val") ? `${n} (solid)` : `${n} (dashed)`)).join(" · "),
      );
      const fig = el("figure", "epochs-curve");
      fig.append(s, legend);
      curves.append(fig);
    }
    plot("loss", ["train/loss", "val/loss"], (v) => v.toFixed(2));
    plot("accuracy", ["train/acc", "val/acc"], (v) => `${(100 * v).toFixed(0)} %`);

    // ------------------------------------------------------------------ drawing
    function drawKernels(s) {
      kernels.replaceChildren();
      if (!s.first) return;
      const f = s.first;
      const cap = el("figcaption");
      cap.textContent =
        f.kind === "conv"
          ? `${f.name}: the ${f.tiles.length} learned ${f.kernel[0]}×${f.kernel[1]} kernels (blue negative, red positive, one scale for every epoch)`
          : `${f.name}: the first ${f.tiles.length} units' weights on the pixels (one scale for every epoch)`;
      const grid = el("div", "epochs-kernel-grid");
      f.tiles.forEach((k, c) => {
        const values = f.kind === "conv" ? sideBySide(k, f.w / f.kernel[1], f.kernel[0], f.kernel[1]) : k;
        const t = tile(f.w, f.h, `epochs-kernel ${f.kind}`);
        t.dataset.channel = String(c);
        diverging(t, values, kernelTop);
        grid.append(t);
      });
      kernels.append(cap, grid);
    }

    function drawMaps(r) {
      maps.replaceChildren();
      for (const m of r.maps) {
        const fig = el("figure", "epochs-map-layer");
        const [c, h, w] = m.shape;
        fig.append(el("figcaption", "", `${m.label} ${c}×${h}×${w}`));
        const grid = el("div", "epochs-map-grid");
        let lo = Infinity;
        let hi = -Infinity;
        for (const v of m.values) {
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        // one grey scale per layer: a channel that did not learn looks dark, not stretched
        for (let k = 0; k < c; k++) {
          const t = tile(w, h, "epochs-tile");
          t.dataset.layer = m.label;
          t.dataset.channel = String(k);
          greys(t, m.values.subarray(k * h * w, (k + 1) * h * w), lo, hi);
          grid.append(t);
        }
        fig.append(grid);
        maps.append(fig);
      }
    }

    function drawBars(r) {
      barEls.forEach((li, i) => {
        const q = r ? r.probabilities[i] : 0;
        li.dataset.probability = String(q);
        li.classList.toggle("top", Boolean(r) && i === r.label);
        li.querySelector(".bar-fill").style.width = `${(100 * q).toFixed(2)}%`;
        li.querySelector(".bar-value").textContent = r ? `${(100 * q).toFixed(1)} %` : "–";
      });
    }

    function accAt(name, epoch) {
      const c = spec.curves[name];
      const i = c ? c.epochs.indexOf(epoch) : -1;
      return i >= 0 ? c.values[i] : null;
    }

    function render() {
      const s = snaps[chosen];
      slider.value = String(chosen);
      slider.setAttribute("aria-valuetext", after(s.epoch));
      ticks.querySelectorAll(".epochs-tick").forEach((b, i) => b.classList.toggle("chosen", i === chosen));
      root.dataset.epoch = String(s.epoch);
      const bits = [after(s.epoch)];
      const acc = accAt("val/acc", s.epoch);
      if (acc !== null) bits.push(`validation accuracy ${(100 * acc).toFixed(1)} %`);
      const r = results && results[chosen];
      if (r) bits.push(`reads ${classNames[r.label] ?? r.label} (${(100 * r.probabilities[r.label]).toFixed(1)} %)`);
      heading.textContent = bits.join(" · ");
      for (const mark of markers) mark(s.epoch);
      drawKernels(s);
      drawBars(r);
      if (r) drawMaps(r);
      else maps.replaceChildren();
    }

    function choose(i) {
      chosen = Math.max(0, Math.min(snaps.length - 1, i));
      render();
    }

    async function run(s, x) {
      const out = await s.session.run({ [s.session.inputNames[0]]: x });
      const names = s.session.outputNames;
      const probabilities = Array.from(out[names[1]].data);
      let label = 0;
      for (let i = 1; i < probabilities.length; i++) if (probabilities[i] > probabilities[label]) label = i;
      const layers = s.feature_maps || [];
      const fmaps = names.slice(2).map((name, i) => ({
        label: (layers[i] && layers[i].label) || name,
        shape: out[name].dims.slice(1),
        values: new Float32Array(out[name].data),
      }));
      for (const t of Object.values(out)) if (t.dispose) t.dispose();
      return { epoch: s.epoch, probabilities, label, maps: fmaps };
    }

    // ------------------------------------------------------------------ the page's calls
    async function update(input) {
      pixels = input;
      const floats = Float32Array.from(input, (v) => v / 255);
      const x = new ort.Tensor("float32", floats, [1, 1, size, size]);
      const got = [];
      for (const s of snaps) got.push(await run(s, x));
      if (pixels !== input) return; // a newer input came in meanwhile
      results = got;
      render();
    }

    function clear() {
      pixels = null;
      results = null;
      render();
    }

    function setEpoch(epoch) {
      const i = snaps.findIndex((s) => s.epoch === Number(epoch));
      if (i < 0) return false;
      choose(i);
      return true;
    }

    render();
    return {
      update,
      clear,
      setEpoch,
      epoch: () => snaps[chosen].epoch,
      // per snapshot {epoch, label, probabilities} for the input now (null before any)
      epochs: () =>
        snaps.map((s, i) => ({
          epoch: s.epoch,
          label: results ? results[i].label : null,
          probabilities: results ? results[i].probabilities.slice() : null,
        })),
      // what the panel draws now: the chosen epoch, its kernels (layer, values per tile) and
      // its maps' shapes
      shown: () => ({
        epoch: snaps[chosen].epoch,
        kernels: snaps[chosen].first
          ? { layer: snaps[chosen].first.name, tiles: snaps[chosen].first.tiles.map((k) => Array.from(k)) }
          : null,
        maps: results ? results[chosen].maps.map((m) => ({ label: m.label, shape: m.shape })) : [],
      }),
    };
  }

  window.imgclsEpochs = { create };
})();
