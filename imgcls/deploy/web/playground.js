// The kernel playground of the page, shared by imgcls serve and imgcls page: the lectures'
// hand-made kernels (imgcls/insight/kernels.py) or one typed in, slid over the framed input
// the way deep learning "convolves" (cross-correlation, no flip, valid: (28 − K + 1)²), an
// optional ReLU, then 2×2 max-pooling, 2×2 average-pooling and stride-2 sub-sampling of the
// result side by side, and the model's own first-layer kernels ranked by how alike they are
// to the chosen one (cosine similarity, the smaller kernel centred in the larger's frame).
"use strict";

(() => {
  // imgcls/insight/kernels.py's KERNELS, in its order (the tests hold the two equal).
  const KERNELS = {
    "Sobel vertical": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "Sobel horizontal": [[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
    Laplacian: [[0, -1, 0], [-1, 4, -1], [0, -1, 0]],
    outline: [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]],
    emboss: [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]],
    sharpen: [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "prong (lecture 000)": [
      [0, 0, -1, 0, 0],
      [0, -1, -2, -1, 0],
      [-1, -2, 16, -2, -1],
      [0, -1, -2, -1, 0],
      [0, 0, -1, 0, 0],
    ],
  };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Valid cross-correlation of x (h x w) with k (K x K): (h − K + 1) x (w − K + 1).
  function correlate(x, h, w, k) {
    const K = k.length;
    const oh = h - K + 1;
    const ow = w - K + 1;
    const out = new Float64Array(oh * ow);
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        let s = 0;
        for (let p = 0; p < K; p++) for (let q = 0; q < K; q++) s += k[p][q] * x[(i + p) * w + j + q];
        out[i * ow + j] = s;
      }
    }
    return { values: out, h: oh, w: ow };
  }

  // 2x2 windows, stride 2, the last odd row / column dropped (torch's max_pool2d / avg_pool2d).
  function pool(m, how) {
    const oh = Math.floor(m.h / 2);
    const ow = Math.floor(m.w / 2);
    const out = new Float64Array(oh * ow);
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        const a = m.values[2 * i * m.w + 2 * j];
        const b = m.values[2 * i * m.w + 2 * j + 1];
        const c = m.values[(2 * i + 1) * m.w + 2 * j];
        const d = m.values[(2 * i + 1) * m.w + 2 * j + 1];
        out[i * ow + j] =
          how === "max" ? Math.max(a, b, c, d) : how === "mean" ? (a + b + c + d) / 4 : a;
      }
    }
    return { values: out, h: oh, w: ow };
  }

  // The two kernels in one K x K frame (the larger's), the smaller centred: cosine of the two.
  function cosine(a, b) {
    const K = Math.max(a.length, b.length);
    const at = (k, i, j) => {
      const o = (K - k.length) / 2;
      const r = i - o;
      const c = j - o;
      return r >= 0 && c >= 0 && r < k.length && c < k.length ? k[r][c] : 0;
    };
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let i = 0; i < K; i++) {
      for (let j = 0; j < K; j++) {
        const x = at(a, i, j);
        const y = at(b, i, j);
        ab += x * y;
        aa += x * x;
        bb += y * y;
      }
    }
    return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
  }

  function paint(canvas, m, diverging) {
    // resizing a canvas clears and reallocates it: only where the shape changes
    if (canvas.width !== m.w) canvas.width = m.w;
    if (canvas.height !== m.h) canvas.height = m.h;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(m.w, m.h);
    const px = img.data;
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of m.values) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const top = Math.max(Math.abs(lo), Math.abs(hi));
    for (let j = 0; j < m.w * m.h; j++) {
      const v = m.values[j];
      if (diverging) {
        const t = top > 0 ? v / top : 0;
        const off = Math.round(255 * (1 - Math.abs(t)));
        px[4 * j] = t > 0 ? 255 : off;
        px[4 * j + 1] = off;
        px[4 * j + 2] = t < 0 ? 255 : off;
      } else {
        const q = hi > lo ? Math.round(((v - lo) / (hi - lo)) * 255) : 0;
        px[4 * j] = q;
        px[4 * j + 1] = q;
        px[4 * j + 2] = q;
      }
      px[4 * j + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  // model: {kernels: [{channel, k (K x K)}]} of the model's first conv layer, or null.
  function create({ root, size, model }) {
    let input = null; // 0..1 floats, size x size
    let name = "Sobel vertical";
    let kernel = KERNELS[name].map((r) => r.slice());
    let relu = false;
    let result = null;

    root.replaceChildren();
    const controls = el("div", "play-controls");
    const select = el("select");
    select.id = "play-kernel";
    for (const k of [...Object.keys(KERNELS), "your own 3×3"]) {
      const o = el("option", "", k);
      o.value = k;
      select.append(o);
    }
    const gridWrap = el("div", "play-grid");
    const reluBox = el("input");
    reluBox.type = "checkbox";
    reluBox.id = "play-relu";
    const reluLabel = el("label", "play-relu");
    reluLabel.append(reluBox, " ReLU after the kernel");
    const pick = el("label", "", "Kernel ");
    pick.append(select);
    controls.append(pick, gridWrap, reluLabel);

    const outs = el("div", "play-outputs");
    const figure = (title) => {
      const f = el("figure", "play-out");
      const c = el("canvas");
      c.setAttribute("role", "img");
      c.setAttribute("aria-label", title);
      const cap = el("figcaption", "muted", title);
      f.append(c, cap);
      outs.append(f);
      return { c, cap };
    };
    const fIn = figure("input (0..1)");
    const fOut = figure("kernel applied");
    const fMax = figure("2×2 max-pool");
    const fAvg = figure("2×2 average-pool");
    const fSub = figure("stride-2 sub-sampling");
    const rank = el("div", "play-rank");
    root.append(controls, outs, rank);

    function buildGrid() {
      gridWrap.replaceChildren();
      const K = kernel.length;
      gridWrap.style.gridTemplateColumns = `repeat(${K}, 3.2rem)`;
      kernel.forEach((row, i) =>
        row.forEach((v, j) => {
          const cell = el("input", "play-cell");
          cell.type = "number";
          cell.step = "any";
          cell.value = String(v);
          cell.setAttribute("aria-label", `kernel row ${i + 1}, column ${j + 1}`);
          cell.addEventListener("input", () => {
            const x = Number(cell.value);
            if (!Number.isFinite(x)) return;
            kernel[i][j] = x;
            name = "your own";
            select.value = kernel.length === 3 ? "your own 3×3" : select.value;
            run();
            rankModel();
          });
          gridWrap.append(cell);
        }),
      );
    }

    function run() {
      if (!input) {
        result = null;
        return;
      }
      let m = correlate(input, size, size, kernel);
      if (relu) m = { ...m, values: m.values.map((v) => (v > 0 ? v : 0)) };
      const maxp = pool(m, "max");
      const avgp = pool(m, "mean");
      const sub = pool(m, "first");
      paint(fIn.c, { values: input, h: size, w: size }, false);
      paint(fOut.c, m, !relu);
      paint(fMax.c, maxp, !relu);
      paint(fAvg.c, avgp, !relu);
      paint(fSub.c, sub, !relu);
      fOut.cap.textContent = `kernel applied: ${m.h}×${m.w}${relu ? ", ReLU" : " (blue negative, red positive)"}`;
      fMax.cap.textContent = `2×2 max-pool: ${maxp.h}×${maxp.w}`;
      fAvg.cap.textContent = `2×2 average-pool: ${avgp.h}×${avgp.w}`;
      fSub.cap.textContent = `stride 2 (every other pixel): ${sub.h}×${sub.w}`;
      result = { map: m, max: maxp, mean: avgp, sub };
    }

    let ranked = [];
    function rankModel() {
      rank.replaceChildren();
      ranked = [];
      if (!model || !model.kernels.length) {
        rank.append(el("p", "muted", "The model's first-layer kernels show on the static site of imgcls page (it carries the weights) for a conv net."));
        return;
      }
      ranked = model.kernels
        .map((m) => ({ channel: m.channel, cosine: cosine(kernel, m.k), k: m.k }))
        .sort((a, b) => b.cosine - a.cosine);
      rank.append(el("p", "muted", `${model.layer}'s ${ranked.length} learned kernels, most alike to this one first (cosine similarity; the smaller kernel centred in the larger):`));
      const row = el("div", "play-rank-row");
      for (const r of ranked) {
        const f = el("figure", "play-rank-item");
        const c = el("canvas");
        const K = r.k.length;
        paint(c, { values: r.k.flat(), h: K, w: K }, true);
        f.append(c, el("figcaption", "", `#${r.channel + 1}: ${r.cosine.toFixed(2)}`));
        row.append(f);
      }
      rank.append(row);
    }

    function setKernel(what) {
      if (typeof what === "string" && KERNELS[what]) {
        name = what;
        kernel = KERNELS[what].map((r) => r.slice());
      } else if (Array.isArray(what) && what.length && what.every((r) => Array.isArray(r) && r.length === what.length)) {
        name = "your own";
        kernel = what.map((r) => r.map(Number));
      } else if (what === "your own 3×3") {
        name = "your own";
        if (kernel.length !== 3) kernel = [[0, 0, 0], [0, 1, 0], [0, 0, 0]];
      } else {
        return;
      }
      select.value = KERNELS[name] ? name : "your own 3×3";
      buildGrid();
      run();
      rankModel(); // the ranking depends on the kernel only, not on the input
    }

    select.addEventListener("change", () => setKernel(select.value));
    reluBox.addEventListener("change", () => {
      relu = reluBox.checked;
      run();
    });
    buildGrid();
    rankModel();

    const arr = (m) => (m ? { shape: [m.h, m.w], values: Array.from(m.values) } : null);
    return {
      update(pixels) {
        input = Float64Array.from(pixels, (v) => v / 255);
        run();
      },
      clear() {
        input = null;
        result = null;
      },
      setKernel,
      setRelu(on) {
        relu = Boolean(on);
        reluBox.checked = relu;
        run();
      },
      state: () => ({
        name,
        kernel: kernel.map((r) => r.slice()),
        relu,
        output: arr(result && result.map),
        maxpool: arr(result && result.max),
        avgpool: arr(result && result.mean),
        stride2: arr(result && result.sub),
        ranked: ranked.map(({ channel, cosine: c }) => ({ channel, cosine: c })),
      }),
    };
  }

  window.imgclsPlayground = { create, KERNELS, correlate, cosine };
})();
