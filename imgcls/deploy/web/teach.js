// The teaching panels of the draw-a-digit page, shared by `imgcls serve` and `imgcls page`:
// the framed 28x28 input the models get, moved by dx / dy sliders (zero fill, as
// `imgcls evaluate shift` and transforms.translate: dx > 0 right, dy > 0 down), each model's
// probabilities for the moved input, and per model a 7x7 grid of the probability of its
// unshifted answer at every shift, all 49 shifted inputs run in one batch per model.
//
// The page hands it a `run(which, pixels, n)` that returns n probability vectors for n uint8
// inputs (which: "model", or "compare" for the model put beside it); where the model runs
// (onnxruntime-web, or the server's JSON batch) is the page's business.
"use strict";

(() => {
  const R = 3; // shifts from -R to +R pixels
  const SIDE = 2 * R + 1;
  // Where the 49-input batches take longer than a frame at 60 Hz together (ms), the page paints
  // its answer before it runs them.
  const SLOW_MS = 16;
  // A model's batch is run a few rows of the grid at a time where it would take longer than
  // this (ms), so a new stroke waits no longer than that. Each pause costs a paint, and on a
  // busy machine the wait for the CPU too: a ResNet's 40 ms batch in rows of 7 took 15 ms more
  // than in one piece under load 6.
  const ROWS_MS = 50;

  // Lecture 002 (J. Calder, Math 5467; imgcls/insight/lectures.py): MNIST test accuracy, in %,
  // of digits shifted by 0, 1, 2, 3 px.
  const LECTURE = {
    mlp: { what: "an MLP with 32 hidden units", shift: [97.0, 87.0, 62.0] },
    cnn: { what: "a CNN (conv 32, conv 64, max-pool, fc 128)", shift: [99.04, 98.07, 92.06, 75.0] },
  };

  // `x` (uint8, size x size, row-major) moved right by dx and down by dy; vacated pixels 0.
  function translate(x, size, dx, dy, out = new Uint8Array(size * size)) {
    out.fill(0);
    for (let y = Math.max(0, dy); y < Math.min(size, size + dy); y++) {
      const src = (y - dy) * size;
      const dst = y * size;
      for (let c = Math.max(0, dx); c < Math.min(size, size + dx); c++) out[dst + c] = x[src + c - dx];
    }
    return out;
  }

  // Index of a shift in the batch: row-major over dy, then dx, both from -R to +R.
  const cell = (dx, dy) => (dy + R) * SIDE + (dx + R);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const pct = (p) => `${(100 * p).toFixed(1)} %`;
  const argmax = (v) => {
    let k = 0;
    for (let i = 1; i < v.length; i++) if (v[i] > v[k]) k = i;
    return k;
  };

  function lectureLine() {
    const m = LECTURE.mlp;
    const c = LECTURE.cnn;
    return (
      `Lecture 002 on MNIST test digits moved by 1, 2 px: ${m.what} ${m.shift[1]} %, ` +
      `${m.shift[2]} %; ${c.what} by 1, 2, 3 px: ${c.shift[1]} %, ${c.shift[2]} %, ` +
      `${c.shift[3]} %.`
    );
  }

  function exportLine(shift) {
    if (!shift || !Array.isArray(shift.distances)) return "Its export records no shift accuracy.";
    const parts = shift.distances.map((r) => `${r.distance_px} px ${pct(r.mean)}`);
    return (
      `Its export, on the first ${Number(shift.n_images).toLocaleString("en")} test images ` +
      `moved 8 ways (mean): unshifted ${pct(shift.unshifted)}, ${parts.join(", ")}.`
    );
  }

  // models: [{role: "model" | "compare", meta}], meta the model's metadata.
  function create({ root, models, classNames, size, run }) {
    const names = classNames;
    let input = null; // the framed input, uint8 size*size
    let batch = null; // the 49 shifted inputs, uint8 49*size*size
    let grids = null; // per model: 49 probability vectors
    let dx = 0;
    let dy = 0;

    root.replaceChildren();
    root.hidden = false;
    const top = el("div", "shift-top");
    const view = el("figure", "shift-input");
    const canvas = el("canvas");
    canvas.id = "shift-view";
    canvas.width = size;
    canvas.height = size;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `The ${size}×${size} input the models get`);
    const vctx = canvas.getContext("2d");
    const caption = el("figcaption", "muted");
    view.append(canvas, caption);

    const sliders = el("div", "shift-sliders");
    const slider = (axis, label) => {
      const wrap = el("label", "shift-slider");
      const input = el("input");
      input.type = "range";
      input.min = String(-R);
      input.max = String(R);
      input.step = "1";
      input.value = "0";
      input.id = `shift-${axis}`;
      const out = el("output", "", "0");
      wrap.append(el("span", "", label), input, out);
      input.addEventListener("input", () => {
        const v = Number(input.value);
        setShift(axis === "dx" ? v : dx, axis === "dy" ? v : dy);
      });
      sliders.append(wrap);
      return { input, out };
    };
    const sx = slider("dx", "dx (right)");
    const sy = slider("dy", "dy (down)");
    const reset = el("button", "", "No shift");
    reset.type = "button";
    reset.id = "shift-reset";
    reset.addEventListener("click", () => setShift(0, 0));
    sliders.append(reset);
    top.append(view, sliders);

    const cols = el("div", "shift-models");
    const parts = models.map((m) => {
      const col = el("div", "shift-model");
      col.dataset.role = m.role;
      const args = m.meta.net_args || {};
      const net = (m.meta.net || "model") + (Array.isArray(args.hidden) ? ` (hidden ${args.hidden.join("-")})` : "");
      const title = el("h3", "", m.role === "compare" ? `${net}, beside it` : net);
      const answer = el("p", "shift-answer");
      const bars = el("ol", "bars shift-bars");
      const barEls = names.map((name, i) => {
        const li = el("li", "bar");
        li.dataset.class = String(i);
        const fill = el("span", "bar-fill");
        const track = el("span", "bar-track");
        track.append(fill);
        const value = el("span", "bar-value", "–");
        li.append(el("span", "bar-label", name), track, value);
        bars.append(li);
        return { li, fill, value };
      });
      const gridTitle = el("p", "shift-grid-title muted", "Probability of its unshifted answer at every shift");
      const grid = el("div", "shift-grid");
      grid.setAttribute("role", "grid");
      grid.append(el("span", "shift-axis", "dy\\dx"));
      for (let c = -R; c <= R; c++) grid.append(el("span", "shift-axis", String(c)));
      const cells = [];
      for (let r = -R; r <= R; r++) {
        grid.append(el("span", "shift-axis", String(r)));
        for (let c = -R; c <= R; c++) {
          const b = el("button", "shift-cell", "");
          b.type = "button";
          b.dataset.dx = String(c);
          b.dataset.dy = String(r);
          b.title = `dx ${c}, dy ${r}`;
          b.addEventListener("click", () => setShift(c, r));
          grid.append(b);
          cells.push(b);
        }
      }
      const figures = el("p", "shift-figures muted", exportLine(m.meta.shift));
      col.append(title, answer, bars, gridTitle, grid, figures);
      cols.append(col);
      return { m, col, answer, barEls, cells, msPerInput: null }; // msPerInput: its last batch, per input
    });
    const lecture = el("p", "shift-lecture muted", lectureLine());
    root.append(top, cols, lecture);

    const img = vctx.createImageData(size, size); // reused: one picture of size x size

    function drawView() {
      const x = batch ? batch.subarray(cell(dx, dy) * size * size, (cell(dx, dy) + 1) * size * size) : null;
      for (let j = 0; j < size * size; j++) {
        const v = x ? x[j] : 0;
        img.data[4 * j] = v;
        img.data[4 * j + 1] = v;
        img.data[4 * j + 2] = v;
        img.data[4 * j + 3] = 255;
      }
      vctx.putImageData(img, 0, 0);
      caption.textContent = `What the models get, moved dx ${dx}, dy ${dy} (zero fill)`;
    }

    function drawModels() {
      parts.forEach((part, mi) => {
        const probs = grids ? grids[mi] : null;
        const here = probs ? probs[cell(dx, dy)] : null;
        const home = probs ? argmax(probs[cell(0, 0)]) : -1;
        const k = here ? argmax(here) : -1;
        part.answer.textContent = here
          ? `reads ${names[k]} (${pct(here[k])})` + (k === home ? "" : `, not ${names[home]}`)
          : "–";
        part.col.dataset.label = here ? String(k) : "";
        part.barEls.forEach((b, i) => {
          const q = here ? here[i] : 0;
          b.li.dataset.probability = String(q);
          b.li.classList.toggle("top", i === k);
          b.fill.style.width = `${(100 * q).toFixed(2)}%`;
          b.value.textContent = here ? pct(q) : "–";
        });
        part.cells.forEach((c, i) => {
          const q = probs ? probs[i][home] : null;
          c.dataset.probability = q === null ? "" : String(q);
          c.textContent = q === null ? "" : String(Math.round(100 * q));
          // light blue (0) to the page's accent (1): the darker, the surer of its answer
          const t = q === null ? 0 : q;
          c.style.background = q === null ? "" : `rgb(${Math.round(235 - 224 * t)} ${Math.round(240 - 141 * t)} ${Math.round(250 - 44 * t)})`;
          c.style.color = t > 0.55 ? "#fff" : "";
          c.classList.toggle("current", Number(c.dataset.dx) === dx && Number(c.dataset.dy) === dy);
        });
      });
    }

    function setShift(x, y) {
      dx = Math.max(-R, Math.min(R, Math.trunc(Number(x) || 0)));
      dy = Math.max(-R, Math.min(R, Math.trunc(Number(y) || 0)));
      sx.input.value = String(dx);
      sx.out.textContent = String(dx);
      sy.input.value = String(dy);
      sy.out.textContent = String(dy);
      drawView();
      drawModels();
    }

    // A new framed input: its 49 shifts, run through every model (one batch each, or a few
    // rows of the grid at a time for a model whose batch takes longer than ROWS_MS). `goOn` is
    // awaited between runs: the page may yield to the browser there, and says whether the
    // input is still the newest; if not, the panel keeps what it shows and update answers false.
    async function update(pixels, goOn = async () => true) {
      const n = SIDE * SIDE;
      const one = size * size;
      const b = new Uint8Array(n * one);
      for (let r = -R; r <= R; r++) {
        for (let c = -R; c <= R; c++) translate(pixels, size, c, r, b.subarray(cell(c, r) * one, (cell(c, r) + 1) * one));
      }
      const views = new Map(); // one view per slice of the batch, shared by the models
      const slice = (row, rows) => {
        const key = `${row}:${rows}`;
        if (!views.has(key)) views.set(key, b.subarray(row * SIDE * one, (row + rows) * SIDE * one));
        return views.get(key);
      };
      const out = [];
      for (const part of parts) {
        const rows = part.msPerInput ? Math.max(1, Math.min(SIDE, Math.floor(ROWS_MS / (part.msPerInput * SIDE)))) : SIDE;
        const probs = [];
        for (let row = 0; row < SIDE; row += rows) {
          if (out.length + row > 0 && !(await goOn())) return false;
          const k = Math.min(rows, SIDE - row);
          const t0 = performance.now();
          const got = await run(part.m.role, slice(row, k), k * SIDE);
          part.msPerInput = (performance.now() - t0) / (k * SIDE);
          for (const p of got) probs.push(p);
        }
        out.push(probs);
      }
      input = Uint8Array.from(pixels);
      batch = b;
      grids = out;
      setShift(dx, dy);
      return true;
    }

    function clear() {
      input = null;
      batch = null;
      grids = null;
      setShift(dx, dy);
    }

    setShift(0, 0);
    return {
      update,
      // whether the 49-input batches took longer than SLOW_MS together last time (or have not
      // run yet): the page then paints its answer before it runs them
      slow: () => parts.reduce((t, p) => t + (p.msPerInput === null ? Infinity : p.msPerInput * SIDE * SIDE), 0) > SLOW_MS,
      clear,
      setShift,
      shift: () => ({ dx, dy }),
      input: () => (input ? Array.from(input) : null),
      shifted: () => (batch ? Array.from(batch.subarray(cell(dx, dy) * size * size, (cell(dx, dy) + 1) * size * size)) : null),
      answers: () =>
        grids
          ? parts.map((p, mi) => ({ name: p.m.meta.net || p.m.role, role: p.m.role, probabilities: Array.from(grids[mi][cell(dx, dy)]) }))
          : [],
      grid: () =>
        grids
          ? parts.map((p, mi) => {
              const home = argmax(grids[mi][cell(0, 0)]);
              const rows = [];
              for (let r = -R; r <= R; r++) {
                const row = [];
                for (let c = -R; c <= R; c++) row.push(grids[mi][cell(c, r)][home]);
                rows.push(row);
              }
              return { name: p.m.meta.net || p.m.role, role: p.m.role, label: home, rows };
            })
          : [],
    };
  }

  window.imgclsTeach = { create, translate, LECTURE, RANGE: R };
})();
