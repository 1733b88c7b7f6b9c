// The framing of imgcls.deploy.framing and the greyscale steps of imgcls.deploy.images,
// ported to plain JavaScript for the static page, which runs the model in the browser.
//
// A page that frames a picture differently from `imgcls infer` silently reads worse, so every
// step follows the Python one operation for operation: Pillow's resampling (its coefficient
// rule, float32 images between passes), its 3x3 rank filters with replicated edges, its
// unsharp mask (box-blur approximation of a Gaussian, integer arithmetic), numpy's median,
// percentile (linear) and round-half-to-even. tests/deploy/test_framing_js.py holds the port to
// the Python framing pixel by pixel on shared test vectors (run in node and in Chromium).
//
// Images are {width, height, data}: data a Float32Array or Uint8Array, row-major, one channel.
"use strict";

(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.imgclsFraming = api;
})(typeof self !== "undefined" ? self : this, () => {
  const MNIST_BOX = 20;
  const INK_FRACTION = 0.2;
  const LEVELS_APART = 64.0;
  const STROKE_MEDIAN = 1.94;
  const STROKE_RANGE = [1.43, 2.86];
  const WORK_SIDE = 1024;
  const f32 = Math.fround;

  // numpy.rint / Python round: halves to even.
  function rint(x) {
    const r = Math.round(x);
    return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  function clip(x, lo, hi) {
    return x < lo ? lo : x > hi ? hi : x;
  }

  function image(width, height, Kind = Float32Array) {
    return { width, height, data: new Kind(width * height) };
  }

  function border(img) {
    const { width: w, height: h, data } = img;
    const out = [];
    for (let x = 0; x < w; x++) out.push(data[x]);
    for (let x = 0; x < w; x++) out.push(data[(h - 1) * w + x]);
    for (let y = 1; y < h - 1; y++) out.push(data[y * w]);
    for (let y = 1; y < h - 1; y++) out.push(data[y * w + w - 1]);
    return out;
  }

  function median(values) {
    const s = Float64Array.from(values).sort();
    const n = s.length;
    if (!n) return NaN;
    return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  }

  // numpy.percentile, linear interpolation
  function percentile(values, q) {
    const s = Float64Array.from(values).sort();
    const pos = ((s.length - 1) * q) / 100;
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, s.length - 1);
    const t = pos - lo;
    return s[lo] + (s[hi] - s[lo]) * t;
  }

  function backgroundLight(img) {
    return median(border(img)) > 127.5;
  }

  // Otsu's threshold between two grey levels, and how far apart their means are, from the
  // histogram of the levels (counts of 0..255) of n pixels.
  function twoLevelsOf(hist, n) {
    const total = Math.max(n, 1);
    const below = new Float64Array(256);
    const mass = new Float64Array(256);
    let b = 0;
    let m = 0;
    for (let i = 0; i < 256; i++) {
      const p = hist[i] / total;
      b += p;
      m += p * i;
      below[i] = b;
      mass[i] = m;
    }
    let best = 0;
    let t = 0;
    for (let i = 0; i < 256; i++) {
      const above = 1.0 - below[i];
      let spread = 0.0;
      if (below[i] > 0 && above > 1e-12) {
        spread = (mass[255] * below[i] - mass[i]) ** 2 / (below[i] * above);
      }
      if (spread > best) {
        best = spread;
        t = i;
      }
    }
    if (best <= 0.0) return [255.0, 0.0];
    const low = mass[t] / below[t];
    const high = (mass[255] - mass[t]) / (1.0 - below[t]);
    return [t, high - low];
  }

  // The paper's grey level: the 90th percentile of the border values `edge`, of those on the
  // paper's side of Otsu's threshold where it finds two levels far apart.
  function paperOf(edge, [threshold, gap]) {
    let b = edge;
    if (gap >= LEVELS_APART) {
      const paper = b.filter((v) => v <= threshold);
      if (paper.length) b = paper;
    }
    return percentile(b, 90);
  }

  // White-on-black ink in [0, 255] (float32), as _ink, of a uint8 picture: as a table of the ink
  // of each grey level (Float32Array(256)), or null where there is none. Each step of _ink is a
  // function of the pixel's level but for the border, Otsu's threshold and the peak, which the
  // level histogram gives: the same numbers, without a float copy of the whole picture.
  function inkLevels(grey) {
    const src = grey.data;
    const n = src.length;
    const counts = new Uint32Array(256);
    for (let i = 0; i < n; i++) counts[src[i]] += 1;
    const light = backgroundLight(grey);
    const level = (v) => (light ? 255 - v : v);
    const hist = new Float64Array(256);
    for (let v = 0; v < 256; v++) hist[level(v)] = counts[v];
    const paper = f32(paperOf(border(grey).map(level), twoLevelsOf(hist, n)));
    const lut = new Float32Array(256);
    let peak = 0;
    for (let v = 0; v < 256; v++) {
      lut[v] = Math.max(f32(level(v) - paper), 0);
      if (counts[v] > 0 && lut[v] > peak) peak = lut[v];
    }
    if (peak <= 0) return null;
    const gain = f32(255.0 / peak);
    const cut = INK_FRACTION * 255.0;
    for (let v = 0; v < 256; v++) {
      const x = f32(lut[v] * gain);
      lut[v] = x < cut ? 0 : x;
    }
    return lut;
  }

  // ------------------------------------------------------------------ Pillow's resampling
  const FILTERS = {
    lanczos: {
      support: 3.0,
      f(x) {
        const sinc = (t) => {
          if (t === 0.0) return 1.0;
          t *= Math.PI;
          return Math.sin(t) / t;
        };
        return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;
      },
    },
    bilinear: {
      support: 1.0,
      f(x) {
        if (x < 0.0) x = -x;
        return x < 1.0 ? 1.0 - x : 0.0;
      },
    },
  };

  // precompute_coeffs of Pillow's Resample.c: for each output pixel, its first input pixel,
  // how many, and their normalised weights.
  function coefficients(inSize, outSize, filter) {
    const scale = inSize / outSize;
    const filterscale = Math.max(scale, 1.0);
    const support = filter.support * filterscale;
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const kk = new Float64Array(outSize * ksize);
    const ss = 1.0 / filterscale;
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      let xmin = Math.trunc(center - support + 0.5);
      if (xmin < 0) xmin = 0;
      let xmax = Math.trunc(center + support + 0.5);
      if (xmax > inSize) xmax = inSize;
      xmax -= xmin;
      let ww = 0.0;
      for (let x = 0; x < xmax; x++) {
        const w = filter.f((x + xmin - center + 0.5) * ss);
        kk[xx * ksize + x] = w;
        ww += w;
      }
      for (let x = 0; x < xmax; x++) if (ww !== 0.0) kk[xx * ksize + x] /= ww;
      bounds[2 * xx] = xmin;
      bounds[2 * xx + 1] = xmax;
    }
    return { ksize, bounds, kk };
  }

  // Image.resize of a mode "F" image (float32 between passes, double sums).
  function resizeFloat(img, width, height, filterName = "lanczos") {
    const filter = FILTERS[filterName];
    let cur = img;
    if (width !== cur.width) {
      const { ksize, bounds, kk } = coefficients(cur.width, width, filter);
      const out = image(width, cur.height);
      const src = cur.data;
      const dst = out.data;
      const inW = cur.width;
      for (let y = 0; y < cur.height; y++) {
        const row = y * inW;
        // A crop of a drawing is mostly paper (0): each row's sums skip the zeros before its
        // first ink and after its last, which changes no sum (a zero term adds nothing, and
        // the terms kept are added in the same order).
        let first = 0;
        while (first < inW && src[row + first] === 0) first++;
        if (first === inW) continue; // a blank row: its outputs stay 0
        let last = inW - 1;
        while (src[row + last] === 0) last--;
        for (let xx = 0; xx < width; xx++) {
          const xmin = bounds[2 * xx];
          const k0 = xx * ksize - xmin;
          const lo = Math.max(xmin, first);
          const hi = Math.min(xmin + bounds[2 * xx + 1] - 1, last);
          let s = 0.0;
          for (let x = lo; x <= hi; x++) s += src[row + x] * kk[k0 + x];
          dst[y * width + xx] = s;
        }
      }
      cur = out;
    }
    if (height !== cur.height) {
      const { ksize, bounds, kk } = coefficients(cur.height, height, filter);
      const out = image(cur.width, height);
      const src = cur.data;
      const dst = out.data;
      const w = cur.width;
      for (let yy = 0; yy < height; yy++) {
        const ymin = bounds[2 * yy];
        const ymax = bounds[2 * yy + 1];
        const k0 = yy * ksize;
        for (let x = 0; x < w; x++) {
          let s = 0.0;
          for (let y = 0; y < ymax; y++) s += src[(ymin + y) * w + x] * kk[k0 + y];
          dst[yy * w + x] = s;
        }
      }
      cur = out;
    }
    if (cur === img) {
      cur = image(img.width, img.height);
      cur.data.set(img.data);
    }
    return cur;
  }

  // Image.resize of a mode "L" image: Pillow's 8-bit path, fixed-point weights.
  function resizeUint8(img, width, height, filterName = "bilinear") {
    const PRECISION_BITS = 32 - 8 - 2;
    const ONE = 2 ** PRECISION_BITS;
    const filter = FILTERS[filterName];
    const fixed = (kk) => Int32Array.from(kk, (k) => (k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE)));
    const clip8 = (ss) => clip(Math.floor(ss / ONE), 0, 255);
    let cur = img;
    if (width !== cur.width) {
      const { ksize, bounds, kk } = coefficients(cur.width, width, filter);
      const k = fixed(kk);
      const out = image(width, cur.height, Uint8Array);
      for (let y = 0; y < cur.height; y++) {
        for (let xx = 0; xx < width; xx++) {
          let s = ONE / 2;
          for (let x = 0; x < bounds[2 * xx + 1]; x++) {
            s += cur.data[y * cur.width + bounds[2 * xx] + x] * k[xx * ksize + x];
          }
          out.data[y * width + xx] = clip8(s);
        }
      }
      cur = out;
    }
    if (height !== cur.height) {
      const { ksize, bounds, kk } = coefficients(cur.height, height, filter);
      const k = fixed(kk);
      const out = image(cur.width, height, Uint8Array);
      for (let yy = 0; yy < height; yy++) {
        for (let x = 0; x < cur.width; x++) {
          let s = ONE / 2;
          for (let y = 0; y < bounds[2 * yy + 1]; y++) {
            s += cur.data[(bounds[2 * yy] + y) * cur.width + x] * k[yy * ksize + y];
          }
          out.data[yy * cur.width + x] = clip8(s);
        }
      }
      cur = out;
    }
    return cur;
  }

  // ImageFilter.MinFilter(3) / MaxFilter(3): the 3x3 window, edges replicated. Computed as a
  // 1x3 pass then a 3x1 pass (the min of a window is the min of its rows' mins): the same
  // pixels, a third of the comparisons.
  function rank3(img, takeMax) {
    const { width: w, height: h, data } = img;
    const pick = takeMax ? Math.max : Math.min;
    const rows = new data.constructor(w * h);
    for (let y = 0; y < h; y++) {
      const o = y * w;
      for (let x = 0; x < w; x++) {
        rows[o + x] = pick(data[o + (x > 0 ? x - 1 : 0)], data[o + x], data[o + (x < w - 1 ? x + 1 : w - 1)]);
      }
    }
    const out = image(w, h, data.constructor);
    const d = out.data;
    for (let y = 0; y < h; y++) {
      const up = (y > 0 ? y - 1 : 0) * w;
      const o = y * w;
      const down = (y < h - 1 ? y + 1 : h - 1) * w;
      for (let x = 0; x < w; x++) d[o + x] = pick(rows[up + x], rows[o + x], rows[down + x]);
    }
    return out;
  }

  function strokeHalfWidth(fine) {
    let mask = image(fine.width, fine.height, Uint8Array);
    let area = 0;
    const f = fine.data;
    for (let i = 0; i < f.length; i++) {
      const on = f[i] >= 128.0;
      mask.data[i] = on ? 255 : 0;
      area += on ? 1 : 0;
    }
    let previous = area;
    for (let k = 1; k <= 40; k++) {
      mask = rank3(mask, false);
      let left = 0;
      const m = mask.data;
      for (let i = 0; i < m.length; i++) left += m[i] > 0 ? 1 : 0;
      if (left <= area / 2) return k - 1 + (previous - area / 2) / Math.max(previous - left, 1);
      previous = left;
    }
    return 40.0;
  }

  function normaliseStroke(fine) {
    const width = strokeHalfWidth(fine);
    if (STROKE_RANGE[0] <= width && width <= STROKE_RANGE[1]) return fine;
    const passes = rint(Math.abs(width - STROKE_MEDIAN));
    let im = image(fine.width, fine.height, Uint8Array);
    for (let i = 0; i < fine.data.length; i++) im.data[i] = clip(rint(fine.data[i]), 0, 255);
    const grow = width < STROKE_MEDIAN;
    for (let p = 0; p < passes; p++) im = rank3(im, grow);
    const out = image(im.width, im.height);
    out.data.set(im.data);
    return out;
  }

  // rows top..top+h-1, columns left..left+w-1 of `img` as float32, each value through `table`
  // where one is given
  function crop(img, top, left, h, w, table = null) {
    const out = image(w, h);
    const src = img.data;
    const dst = out.data;
    for (let y = 0; y < h; y++) {
      const o = (top + y) * img.width + left;
      if (table) for (let x = 0; x < w; x++) dst[y * w + x] = table[src[o + x]];
      else for (let x = 0; x < w; x++) dst[y * w + x] = src[o + x];
    }
    return out;
  }

  // rows and columns holding anything but zero: [first row, last row, first col, last col]
  // Each row is scanned from the left to its first kept pixel and from the right to its last,
  // not through the middle; a uint8 picture's test is a table of its 256 levels.
  function inkBox(img, keep) {
    const { width: w, height: h, data } = img;
    let test = keep;
    if (data instanceof Uint8Array) {
      const table = Uint8Array.from({ length: 256 }, (_, v) => (keep(v) ? 1 : 0));
      test = (v) => table[v] === 1;
    }
    let r0 = -1;
    let r1 = -1;
    let c0 = w;
    let c1 = -1;
    for (let y = 0; y < h; y++) {
      const o = y * w;
      let x = 0;
      while (x < w && !test(data[o + x])) x++;
      if (x === w) continue;
      if (r0 < 0) r0 = y;
      r1 = y;
      if (x < c0) c0 = x;
      let z = w - 1;
      while (!test(data[o + z])) z--;
      if (z > c1) c1 = z;
    }
    return r0 < 0 ? null : [r0, r1, c0, c1];
  }

  function clipImage(img, lo, hi) {
    for (let i = 0; i < img.data.length; i++) img.data[i] = clip(img.data[i], lo, hi);
    return img;
  }

  // frame_like_mnist: grey {width, height, data uint8} -> Uint8Array(size * size)
  function frameLikeMnist(grey, size = 28) {
    const out = new Float32Array(size * size);
    const lut = inkLevels(grey);
    const box = lut && inkBox(grey, (v) => lut[v] !== 0);
    if (!box) return new Uint8Array(size * size);
    const [r0, r1, c0, c1] = box;
    const c = crop(grey, r0, c0, r1 - r0 + 1, c1 - c0 + 1, lut);
    const boxSide = (MNIST_BOX * size) / 28.0;
    const scale = boxSide / Math.max(c.height, c.width);
    const h = Math.max(1, rint(c.height * scale));
    const w = Math.max(1, rint(c.width * scale));
    const fine = normaliseStroke(clipImage(resizeFloat(c, 4 * w, 4 * h), 0, 255));
    const digit = clipImage(resizeFloat(fine, w, h), 0, 255);
    let mass = 0;
    let my = 0;
    let mx = 0;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = digit.data[y * w + x];
        mass += v;
        my += v * y;
        mx += v * x;
      }
    }
    if (mass <= 0) return new Uint8Array(size * size);
    const cy = my / mass;
    const cx = mx / mass;
    const top = Math.min(Math.max(rint(size / 2 - cy - 0.5), 0), size - h);
    const left = Math.min(Math.max(rint(size / 2 - cx - 0.5), 0), size - w);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) out[(top + y) * size + left + x] = digit.data[y * w + x];
    }
    return Uint8Array.from(out, (v) => clip(rint(v), 0, 255));
  }

  // ImageFilter.UnsharpMask(radius=1, percent=100, threshold=0) of a mode "L" image:
  // Pillow's Gaussian blur as 3 passes of an extended box blur, in 24-bit fixed point.
  function boxRadius(radius, passes) {
    const sigma2 = f32((radius * radius) / passes);
    const L = f32(Math.sqrt(f32(12.0 * sigma2 + 1.0)));
    const l = Math.floor(f32((L - 1.0) / 2.0));
    let a = f32((2 * l + 1) * f32(l * (l + 1) - f32(3 * sigma2)));
    a = f32(a / f32(6 * f32(sigma2 - (l + 1) * (l + 1))));
    return f32(l + a);
  }

  function boxBlurLine(src, lastx, floatRadius) {
    const radius = Math.trunc(floatRadius);
    const ww = Math.trunc(f32(2 ** 24 / f32(floatRadius * 2 + 1))); // float division in C
    const fw = Math.trunc((2 ** 24 - (radius * 2 + 1) * ww) / 2);
    const n = lastx + 1;
    const at = (i) => src[clip(i, 0, lastx)];
    const out = new Uint8Array(n);
    for (let x = 0; x < n; x++) {
      let acc = 0;
      for (let i = x - radius; i <= x + radius; i++) acc += at(i);
      const bulk = acc * ww + (at(x - radius - 1) + at(x + radius + 1)) * fw;
      out[x] = Math.floor((bulk + 2 ** 23) / 2 ** 24);
    }
    return out;
  }

  function gaussianBlur8(img, radius, passes = 3) {
    const r = boxRadius(radius, passes);
    const { width: w, height: h } = img;
    const a = new Uint8Array(img.data);
    for (let p = 0; p < passes; p++) {
      for (let y = 0; y < h; y++) a.set(boxBlurLine(a.subarray(y * w, y * w + w), w - 1, r), y * w);
    }
    const col = new Uint8Array(h);
    for (let p = 0; p < passes; p++) {
      for (let x = 0; x < w; x++) {
        for (let y = 0; y < h; y++) col[y] = a[y * w + x];
        const b = boxBlurLine(col, h - 1, r);
        for (let y = 0; y < h; y++) a[y * w + x] = b[y];
      }
    }
    return a;
  }

  function unsharpMask(img, radius = 1, percent = 100, threshold = 0) {
    const blurred = gaussianBlur8(img, radius);
    const out = image(img.width, img.height, Uint8Array);
    for (let i = 0; i < img.data.length; i++) {
      const diff = img.data[i] - blurred[i];
      out.data[i] =
        Math.abs(diff) > threshold ? clip(img.data[i] + Math.trunc((diff * percent) / 100), 0, 255) : img.data[i];
    }
    return out;
  }

  // frame_like_fashion: grey {width, height, data uint8} -> Uint8Array(size * size)
  function frameLikeFashion(grey, size = 28) {
    const n = grey.data.length;
    const g = image(grey.width, grey.height);
    for (let i = 0; i < n; i++) g.data[i] = grey.data[i];
    if (backgroundLight(g)) for (let i = 0; i < n; i++) g.data[i] = 255 - g.data[i];
    const W = g.width;
    const H = g.height;
    const corner = median([g.data[0], g.data[W - 1], g.data[(H - 1) * W], g.data[H * W - 1]]);
    const box = inkBox(g, (v) => Math.abs(v - corner) > 0.1 * 255.0);
    if (!box) return new Uint8Array(size * size);
    const [r0, r1, c0, c1] = box;
    const c = crop(g, r0, c0, r1 - r0 + 1, c1 - c0 + 1);
    for (let i = 0; i < c.data.length; i++) c.data[i] = clip(f32(c.data[i] - corner), 0, 255);
    const scale = size / Math.max(c.height, c.width);
    const h = Math.max(1, rint(c.height * scale));
    const w = Math.max(1, rint(c.width * scale));
    const r = resizeFloat(c, w, h);
    const small = image(w, h, Uint8Array);
    for (let i = 0; i < r.data.length; i++) small.data[i] = Math.trunc(clip(r.data[i], 0, 255));
    const sharp = unsharpMask(small);
    const top = Math.floor((size - h) / 2);
    const left = Math.floor((size - w) / 2);
    const out = new Uint8Array(size * size);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) out[(top + y) * size + left + x] = sharp.data[y * w + x];
    }
    return out;
  }

  // ------------------------------------------------------------------ decode_image's steps
  // _reduction: the integer factor a large picture is reduced by before it is framed.
  function reduction(width, height, size) {
    return Math.max(1, Math.min(Math.floor(Math.max(width, height) / WORK_SIDE), Math.floor(width / size), Math.floor(height / size)));
  }

  // RGBA pixels (Uint8ClampedArray, not premultiplied) -> one grey channel, as decode_image:
  // an opaque picture by Pillow's convert("L") (ITU-R 601 luma, 16-bit fixed point); a
  // transparent one by _composite_alpha (the alpha channel is the ink, white on black).
  function greyOf(rgba, width, height) {
    const n = width * height;
    const out = image(width, height, Uint8Array);
    let opaque = true;
    for (let i = 0; i < n; i++) if (rgba[4 * i + 3] !== 255) { opaque = false; break; }
    if (opaque) {
      for (let i = 0; i < n; i++) {
        out.data[i] = (rgba[4 * i] * 19595 + rgba[4 * i + 1] * 38470 + rgba[4 * i + 2] * 7471 + 0x8000) >>> 16;
      }
      return out;
    }
    const colour = new Float32Array(n);
    const alpha = new Float32Array(n);
    let weight = 0;
    let inked = 0;
    for (let i = 0; i < n; i++) {
      const a = f32(rgba[4 * i + 3] / 255);
      const c = f32(f32(f32(rgba[4 * i] * f32(0.299)) + f32(rgba[4 * i + 1] * f32(0.587))) + f32(rgba[4 * i + 2] * f32(0.114)));
      alpha[i] = a;
      colour[i] = c;
      weight += a;
      inked += c * a;
    }
    const level = weight ? inked / weight : 255.0;
    for (let i = 0; i < n; i++) {
      const c = level < 128.0 ? f32(255.0 - colour[i]) : colour[i];
      out.data[i] = clip(rint(f32(c * alpha[i])), 0, 255);
    }
    return out;
  }

  // The model's uint8 input from a grey picture: as it is at the model's size, else framed
  // (framing "mnist" / "fashion_mnist"), else (framing "none") squashed with Pillow's bilinear.
  function toModelInput(grey, size, framing) {
    if (grey.width === size && grey.height === size) return Uint8Array.from(grey.data);
    if (framing === "mnist") return frameLikeMnist(grey, size);
    if (framing === "fashion_mnist") return frameLikeFashion(grey, size);
    return resizeUint8(grey, size, size, "bilinear").data;
  }

  return {
    frameLikeMnist,
    frameLikeFashion,
    greyOf,
    toModelInput,
    reduction,
    resizeFloat,
    resizeUint8,
    unsharpMask,
    gaussianBlur8,
    rank3,
    rint,
    WORK_SIDE,
  };
});
