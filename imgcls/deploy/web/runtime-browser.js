// Where the model runs on the static site of `imgcls page`: in this page, with onnxruntime-web
// (WebAssembly, one thread: a static host gives no cross-origin isolation), loaded from the
// site's own static/ folder. An image goes through the same steps as in `imgcls infer`: the
// pixel limit checked on the size the file declares before it is decoded, grey (transparency
// composited), framed like the training images (framing.js), 0..1 float pixels.
"use strict";

(() => {
  const F = window.imgclsFraming;

  // Width and height a file declares, read from its header: [w, h], or null when it is not a
  // PNG, JPEG, GIF, WebP or BMP file.
  function declaredSize(b) {
    const u16be = (i) => (b[i] << 8) | b[i + 1];
    const u16le = (i) => b[i] | (b[i + 1] << 8);
    const u32be = (i) => ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
    const i32le = (i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
    const ascii = (i, n) => String.fromCharCode(...b.subarray(i, i + n));
    if (b.length >= 24 && b[0] === 0x89 && ascii(1, 3) === "PNG") return [u32be(16), u32be(20)];
    if (b.length >= 10 && ascii(0, 4) === "GIF8") return [u16le(6), u16le(8)];
    if (b.length >= 26 && ascii(0, 2) === "BM") return [Math.abs(i32le(18)), Math.abs(i32le(22))];
    if (b.length >= 30 && ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") {
      const chunk = ascii(12, 4);
      if (chunk === "VP8 ") return [u16le(26) & 0x3fff, u16le(28) & 0x3fff];
      if (chunk === "VP8L") {
        return [1 + (((b[22] & 0x3f) << 8) | b[21]), 1 + (((b[24] & 0xf) << 10) | (b[23] << 2) | ((b[22] & 0xc0) >> 6))];
      }
      if (chunk === "VP8X") return [1 + (b[24] | (b[25] << 8) | (b[26] << 16)), 1 + (b[27] | (b[28] << 8) | (b[29] << 16))];
      return null;
    }
    if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
      let i = 2;
      while (i + 9 < b.length) {
        if (b[i] !== 0xff) return null;
        const marker = b[i + 1];
        if (marker === 0xff) {
          i += 1;
          continue;
        }
        const sof = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
        if (sof) return [u16be(i + 7), u16be(i + 5)];
        i += 2 + u16be(i + 2);
      }
    }
    return null;
  }

  // The decoded picture's RGBA pixels, reduced like decode_image does a large one (an integer
  // factor, area average) in strips, so no full-size copy of a 64-megapixel photo is made.
  function pixelsOf(bitmap, size) {
    const W = bitmap.width;
    const H = bitmap.height;
    const k = F.reduction(W, H, size);
    if (k === 1) {
      const canvas = new OffscreenCanvas(W, H);
      const c = canvas.getContext("2d", { willReadFrequently: true });
      c.drawImage(bitmap, 0, 0);
      return { width: W, height: H, rgba: c.getImageData(0, 0, W, H).data };
    }
    const w = Math.floor(W / k);
    const h = Math.floor(H / k);
    const out = new Uint8ClampedArray(w * h * 4);
    const rows = Math.max(1, Math.floor((1 << 20) / (W * k)));
    const canvas = new OffscreenCanvas(w * k, rows * k);
    const c = canvas.getContext("2d", { willReadFrequently: true });
    const n = k * k;
    for (let y0 = 0; y0 < h; y0 += rows) {
      const m = Math.min(rows, h - y0);
      c.clearRect(0, 0, canvas.width, canvas.height);
      c.drawImage(bitmap, 0, y0 * k, w * k, m * k, 0, 0, w * k, m * k);
      const d = c.getImageData(0, 0, w * k, m * k).data;
      for (let y = 0; y < m; y++) {
        for (let x = 0; x < w; x++) {
          // averaged premultiplied, as Pillow's reduce does a transparent picture
          let r = 0;
          let g = 0;
          let bl = 0;
          let a = 0;
          for (let dy = 0; dy < k; dy++) {
            for (let dx = 0; dx < k; dx++) {
              const j = 4 * ((y * k + dy) * w * k + x * k + dx);
              const al = d[j + 3];
              r += d[j] * al;
              g += d[j + 1] * al;
              bl += d[j + 2] * al;
              a += al;
            }
          }
          const o = 4 * ((y0 + y) * w + x);
          out[o + 3] = Math.round(a / n);
          if (a > 0) {
            out[o] = Math.round(r / a);
            out[o + 1] = Math.round(g / a);
            out[o + 2] = Math.round(bl / a);
          }
        }
      }
    }
    return { width: w, height: h, rgba: out };
  }

  const UNIT = Float32Array.from({ length: 256 }, (_, v) => v / 255); // a pixel's model value

  // Per channel min-max scaled to 0..255, as the service's encode_maps.
  function mapBytes(data, c, h, w) {
    const n = h * w;
    const out = new Uint8Array(c * n);
    for (let k = 0; k < c; k++) {
      let lo = Infinity;
      let hi = -Infinity;
      for (let j = 0; j < n; j++) {
        const v = data[k * n + j];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const span = hi > lo ? hi - lo : 1.0;
      for (let j = 0; j < n; j++) out[k * n + j] = F.rint(((data[k * n + j] - lo) / span) * 255.0);
    }
    return out;
  }

  // The model's uint8 input (height x width, row-major) for an input ({pad} or {file}), as
  // decode_image makes it: the pixel limit checked on the size the file declares, grey,
  // framed. Needs no onnxruntime: the server's page computes the input it shows this way too.
  async function modelInput(input, { pad, meta, RefusedError }) {
    const shape = (meta.input && meta.input.shape) || ["batch", 1, 28, 28];
    const [channels, height, width] = shape.slice(1).map(Number);
    const maxPixels = Number(meta.max_pixels) || 64000000;
    if (channels !== 1 || height !== width) {
      throw new RefusedError(`the page runs one-channel square models, not ${shape}`);
    }
    let grey;
    if (input.pad) {
      const c = pad.getContext("2d", { willReadFrequently: true });
      grey = F.greyOf(c.getImageData(0, 0, pad.width, pad.height).data, pad.width, pad.height);
    } else {
      const file = input.file;
      const bytes = new Uint8Array(await file.arrayBuffer());
      const size = declaredSize(bytes);
      if (!size) {
        throw new RefusedError(
          `${file.name}: not an image file the page can read (PNG, JPEG, GIF, WebP or BMP)`,
        );
      }
      const [w, h] = size;
      if (w * h > maxPixels) {
        throw new RefusedError(
          `${file.name}: refused, it declares ${w}x${h} pixels, more than the ` +
            `${maxPixels.toLocaleString("en")} allowed; shrink the image or check where it came from`,
        );
      }
      let bitmap;
      try {
        bitmap = await createImageBitmap(new Blob([bytes]), {
          premultiplyAlpha: "none",
          colorSpaceConversion: "none",
        });
      } catch (err) {
        throw new RefusedError(`${file.name}: not a readable image file (damaged or unsupported)`);
      }
      try {
        const { width: W, height: H, rgba } = pixelsOf(bitmap, height);
        grey = F.greyOf(rgba, W, H);
      } finally {
        bitmap.close();
      }
    }
    return F.toModelInput(grey, height, meta.framing || "mnist");
  }

  async function fetchJson(url) {
    const resp = await fetch(url);
    if (!resp.ok) throw new Error(`${url}: ${resp.status} ${resp.statusText}`.trim());
    return resp.json();
  }

  async function create({ pad, RefusedError }) {
    const ort = window.ort;
    if (!ort) throw new Error("onnxruntime-web (static/ort.wasm.min.js) did not load");
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.wasmPaths = new URL("static/", document.baseURI).href;
    ort.env.logLevel = "error";
    const meta = await fetchJson("metadata.json");
    const opts = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    const model = await ort.InferenceSession.create("model.onnx", opts);
    let features = null;
    if (meta.features) {
      try {
        features = await ort.InferenceSession.create("model.features.onnx", opts);
      } catch (err) {
        meta.features = false; // the page says there are no feature maps; predictions work
      }
    }
    const shape = (meta.input && meta.input.shape) || ["batch", 1, 28, 28];
    const [height, width] = shape.slice(2).map(Number);
    const names = meta.class_names || [];
    // The model the page puts beside this one (imgcls page --compare): same input, same classes.
    let compare = null;
    if (meta.compare) compare = await ort.InferenceSession.create("compare.onnx", opts);
    const inputOf = (input) => modelInput(input, { pad, meta, RefusedError });

    async function classify(input, wantFeatures) {
      const pixels = await inputOf(input);
      const floats = new Float32Array(pixels.length);
      for (let i = 0; i < pixels.length; i++) floats[i] = UNIT[pixels[i]];
      const x = new ort.Tensor("float32", floats, [1, 1, height, width]);
      const session = wantFeatures && features ? features : model;
      const out = await session.run({ [session.inputNames[0]]: x });
      // An ensemble's feature model is its first member alone: the answer is model.onnx's.
      if (session === features && meta.features_answer === false) {
        const own = await model.run({ [model.inputNames[0]]: x });
        for (let i = 0; i < 2; i++) {
          const name = session.outputNames[i];
          if (out[name].dispose) out[name].dispose();
          out[name] = own[model.outputNames[i]];
        }
      }
      const probs = Array.from(out[session.outputNames[1]].data);
      let label = 0;
      for (let i = 1; i < probs.length; i++) if (probs[i] > probs[label]) label = i;
      const answer = { label, class_name: names[label], probabilities: probs };
      if (session === features) {
        const layers = meta.feature_maps || [];
        answer.maps = session.outputNames.slice(2).map((name, i) => {
          const t = out[name];
          const [c, h, w] = t.dims.slice(1);
          const layer = layers[i] || { label: name, kind: "conv" };
          const values = new Float32Array(t.data); // raw, for the other grey scales and dense units
          const map = { label: layer.label, kind: layer.kind, shape: [c, h, w], values };
          // scaled to bytes when the maps are drawn, after the answer is on the page
          let bytes = null;
          Object.defineProperty(map, "bytes", { enumerable: true, get: () => (bytes = bytes || mapBytes(values, c, h, w)) });
          return map;
        });
      }
      answer.input = pixels;
      answer.logits = new Float32Array(out[session.outputNames[0]].data);
      for (const t of Object.values(out)) if (t.dispose) t.dispose();
      return answer;
    }

    // The models of one batch share its float pixels: converted once, as v / 255 in float32.
    let lastPixels = null;
    let lastFloats = null;
    function floatsOf(pixels) {
      if (pixels !== lastPixels) {
        lastFloats = new Float32Array(pixels.length);
        for (let i = 0; i < pixels.length; i++) lastFloats[i] = UNIT[pixels[i]];
        lastPixels = pixels;
      }
      return lastFloats;
    }

    // Probabilities of `n` inputs (uint8, n x height x width, row-major) in one session call:
    // which = "model" or "compare".
    async function runBatch(which, pixels, n) {
      const session = which === "compare" ? compare : model;
      const x = new ort.Tensor("float32", floatsOf(pixels), [n, 1, height, width]);
      const out = await session.run({ [session.inputNames[0]]: x });
      const name = session.outputNames.includes("probabilities") ? "probabilities" : session.outputNames[1];
      const data = out[name].data;
      const k = data.length / n;
      const rows = [];
      for (let i = 0; i < n; i++) rows.push(data.slice(i * k, (i + 1) * k));
      for (const t of Object.values(out)) if (t.dispose) t.dispose();
      return rows;
    }

    return {
      refused: "The page could not read the image",
      failed: "The model could not run",
      async metadata() {
        return meta;
      },
      classify,
      inputOf,
      runBatch,
      weights: (index) => window.imgclsLayers.loadWeights(index),
    };
  }

  window.imgclsBrowserRuntime = { create, declaredSize, modelInput };
})();
