// The draw-a-digit page: one code base for `imgcls serve` (the model runs on the server:
// /predict, /features, /metadata) and for the static site of `imgcls page` (the model runs in
// this page with onnxruntime-web: runtime-browser.js). The <meta name="imgcls-runtime"> of
// index.html says which. Plain browser JavaScript: no build step, no CDN, so the page works
// offline from the installed package or from any static host.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const app = $("#app");
  const pad = $("#pad");
  // The browser runtime reads the drawing back after every stroke: a CPU-backed canvas.
  const ctx = pad.getContext("2d", { willReadFrequently: true });
  const predictionEl = $("#prediction");
  const confidenceEl = $("#confidence");
  const barsEl = $("#bars");
  const statusEl = $("#status");
  const fmapsEl = $("#fmaps");
  const featuresNote = $("#features-note");
  const uploadEl = $("#upload");
  const photoFigure = $("#photo-figure");
  const photoEl = $("#photo");
  const keyForm = $("#key-form");
  const keyInput = $("#key-input");
  const keyMessage = $("#key-message");
  const RUNTIME = ($('meta[name="imgcls-runtime"]') || {}).content || "server";
  const KEY_STORE = "imgcls-api-key";

  // MNIST digits are ~20 px strokes-in-a-box of 28 px; a line of 1/13 of the pad keeps that
  // stroke-to-size ratio once the server frames the ink into 20×20.
  const LINE_WIDTH = Math.round(pad.width / 13);
  const INK = "#111";
  const PAPER = "#fff";

  let meta = null;
  let hasInk = false;
  let drawing = false;
  let last = null;
  // Every change of the input (a stroke, Clear, an upload) gets a new generation; an answer
  // for an older generation is dropped so a late reply cannot overwrite a cleared page.
  let generation = 0;
  let inFlight = false;
  let pending = null; // () => Promise<Blob>: the newest input waiting for the request in flight
  let photoUrl = null;
  let runtime = null; // where the model runs: serverRuntime() or the browser's
  // Measured in the page for benchmarks/page_speed.py, per stroke, in ms from its pointerup:
  // `answer` its class and bars drawn and the page free to paint them (the end of the task that
  // drew them), `frame` the animation frame after they were drawn (they are on screen when it
  // is painted), `all` every panel drawn. `timings` holds the `all` of each.
  const timings = [];
  const strokes = [];
  let strokeEnd = null;
  let teach = null; // the teaching panels (teach.js), once the metadata is in
  let layersView = null; // the layer panel (layers.js)
  let playground = null; // the kernel playground (playground.js)
  let epochsView = null; // the epoch slider (epochs.js), on a site built with --epochs
  let weights = null; // the site's weights.bin by tensor name, where it carries one
  // The test hook: every number the page shows, for tests to hold against Python.
  //   input()          the framed input the models get (row-major 0..255), or null
  //   setShift(dx, dy) move it (-3..3; dx > 0 right, dy > 0 down): no model re-runs
  //   shift(), shifted()  the shift now, and the moved input
  //   answers()        each model's {name, role, probabilities} for the moved input
  //   grid()           per model the 7x7 probabilities of its unshifted answer, rows dy -3..3
  window.imgclsPage = {
    timings,
    strokes,
    runtime: RUNTIME,
    input: () => (teach ? teach.input() : null),
    setShift: (dx, dy) => teach && teach.setShift(dx, dy),
    shift: () => (teach ? teach.shift() : { dx: 0, dy: 0 }),
    shifted: () => (teach ? teach.shifted() : null),
    answers: () => (teach ? teach.answers() : []),
    grid: () => (teach ? teach.grid() : []),
    //   layers()         each layer of the export's ledger: name, kind, op, shape, params, macs
    //   units()          each dense layer's units (after its activation) for the input now
    //   setScale(mode)   the feature maps' grey scale: "channel", "layer" or "network"
    layers: () => (layersView ? layersView.layers() : []),
    units: () => (layersView ? layersView.units() : {}),
    setScale: (mode) => layersView && layersView.setScale(mode),
    //   inspect(name, channel, row, col)  what the hovered unit computed (its sum, window,
    //                    kernel, receptive field), as the inspector shows it; for a dense
    //                    layer `channel` is the unit
    inspect: (name, channel, row, col) => (layersView ? layersView.inspect(name, channel, row, col) : null),
    //   playground()     the kernel playground: kernel, relu, output, maxpool, avgpool,
    //                    stride2 ({shape, values}) and the model's kernels ranked
    //   setKernel(k), setRelu(on)  a lecture kernel by name or a K x K array; ReLU on / off
    playground: () => (playground ? playground.state() : null),
    setKernel: (k) => playground && playground.setKernel(k),
    setRelu: (on) => playground && playground.setRelu(on),
    //   epochs()         per snapshot {epoch, label, probabilities} for the input now
    //   setEpoch(n), epoch()  show the snapshot after n epochs; the one shown
    //   epochShown()     what the epoch panel draws: its kernels and maps
    epochs: () => (epochsView ? epochsView.epochs() : []),
    setEpoch: (n) => (epochsView ? epochsView.setEpoch(n) : false),
    epoch: () => (epochsView ? epochsView.epoch() : null),
    epochShown: () => (epochsView ? epochsView.shown() : null),
  };

  // ---------------------------------------------------------------------------- status
  function setStatus(text, isError = false) {
    statusEl.textContent = text;
    statusEl.classList.toggle("error", isError);
  }

  async function errorDetail(resp) {
    try {
      const body = await resp.json();
      if (body && body.detail) {
        return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
    } catch (_) {
      // not JSON: fall back to the HTTP status line
    }
    return `${resp.status} ${resp.statusText}`.trim();
  }

  function setBusy() {
    app.dataset.busy = String(inFlight || pending !== null || drawing);
  }

  // ---------------------------------------------------------------------------- metadata
  function classNames() {
    if (meta && Array.isArray(meta.class_names)) return meta.class_names;
    return Array.from({ length: 10 }, (_, i) => String(i));
  }

  function buildBars() {
    barsEl.replaceChildren();
    classNames().forEach((name, i) => {
      const li = document.createElement("li");
      li.className = "bar";
      li.dataset.class = String(i);
      li.dataset.probability = "0";
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = name;
      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = "–";
      li.append(label, track, value);
      barsEl.append(li);
    });
  }

  // The layer panel (layers.js): every layer with its ledger, the feature maps, dense units.
  function buildLayers() {
    layersView = window.imgclsLayers.create({
      root: fmapsEl,
      meta,
      classNames: classNames(),
      weights,
      scaleRoot: $("#fmap-scale"),
    });
  }

  function showNoFeatures(text) {
    if (!Array.isArray(meta && meta.layers)) fmapsEl.replaceChildren(); // else its dense layers stay
    featuresNote.textContent = text;
    featuresNote.hidden = false;
  }

  async function loadMetadata() {
    try {
      runtime = RUNTIME === "browser" ? await browserRuntime() : await serverRuntime();
      window.imgclsPage.backend = runtime;
      meta = await runtime.metadata();
      await loadScript("static/teach.js");
      await loadScript("static/layers.js");
      await loadScript("static/playground.js");
    } catch (err) {
      setStatus(`Could not read the model's metadata: ${err.message}`, true);
      buildBars();
      app.dataset.model = "failed";
      return;
    }
    const dataset = { mnist: "MNIST", fashion_mnist: "Fashion-MNIST" }[meta.dataset] || meta.dataset;
    $("#model-name").textContent = `${meta.net || "model"} on ${dataset || "?"}`;
    document.title = `imgcls: ${meta.net || "model"} on ${dataset || "?"}`;
    const bits = [`model ${meta.model_id || "?"}`];
    if (meta.provider) bits.push(meta.provider);
    if (typeof meta.test_accuracy === "number") {
      bits.push(`test accuracy ${(100 * meta.test_accuracy).toFixed(2)} %`);
    }
    $("#model-info").textContent = bits.join(" · ");
    buildBars();
    if (meta.weights && runtime.weights) {
      try {
        weights = await runtime.weights(meta.weights);
      } catch (err) {
        weights = null; // the page still answers; the dense units say why they are missing
      }
    }
    buildLayers();
    if (meta.features && Array.isArray(meta.feature_maps) && meta.feature_maps.length) {
      featuresNote.hidden = true;
    } else {
      showNoFeatures(
        `No feature maps for this model (${meta.net || "?"}): it has no convolution or ` +
          "pooling layers, or it was exported without its feature-map model " +
          "(model.features.onnx).",
      );
    }
    buildTeach();
    buildPlayground();
    await buildEpochs();
    const thing = meta.dataset === "mnist" ? "digit" : meta.dataset === "fashion_mnist" ? "piece of clothing" : "shape";
    setStatus(hasInk ? "" : `Ready: draw a ${thing}.`);
    // Scripts and tests wait on this rather than on the bars, which exist from the start.
    app.dataset.model = "ready";
    if (pending && !inFlight) {
      const next = pending; // drawn or uploaded while the model was loading
      pending = null;
      send(next, generation);
    }
  }

  // ---------------------------------------------------------------------------- drawing
  function resetPad() {
    // An opaque background: a transparent PNG would decode as black ink on black paper.
    ctx.fillStyle = PAPER;
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    hasInk = false;
  }

  function padPoint(ev) {
    const r = pad.getBoundingClientRect();
    return {
      x: ((ev.clientX - r.left) * pad.width) / r.width,
      y: ((ev.clientY - r.top) * pad.height) / r.height,
    };
  }

  function dot(p) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, LINE_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
  }

  pad.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    ev.preventDefault();
    pad.setPointerCapture(ev.pointerId);
    if (!photoFigure.hidden) hidePhoto();
    drawing = true;
    last = padPoint(ev);
    dot(last);
    hasInk = true;
    setBusy();
    requestPrediction();
  });

  pad.addEventListener("pointermove", (ev) => {
    if (!drawing) return;
    ev.preventDefault();
    // Coalesced events keep fast strokes smooth where the browser batches pointer moves.
    const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    for (const e of events.length ? events : [ev]) {
      last = padPoint(e);
      ctx.lineTo(last.x, last.y);
    }
    ctx.stroke();
    requestPrediction();
  });

  function endStroke(ev) {
    if (!drawing) return;
    drawing = false;
    if (pad.hasPointerCapture(ev.pointerId)) pad.releasePointerCapture(ev.pointerId);
    strokeEnd = performance.now();
    requestPrediction();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  // ---------------------------------------------------------------------------- requests
  // An input is {pad: true} (the drawing) or {file} (an upload); the runtime turns it into an
  // answer {label, class_name, probabilities, maps?}, or throws a RefusedError for an input it
  // cannot read (a message for the status line).
  class RefusedError extends Error {}

  function padBlob() {
    return new Promise((resolve, reject) => {
      pad.toBlob((b) => (b ? resolve(b) : reject(new Error("the canvas gave no image"))), "image/png");
    });
  }

  function requestPrediction() {
    if (!hasInk) return;
    submit({ pad: true });
  }

  // At most one request in flight: a newer input waits in `pending` (replacing any older one)
  // and goes out when the answer in flight comes back, so drawing never queues up requests.
  function submit(input) {
    generation += 1;
    if (inFlight || !runtime || !meta) {
      pending = input;
      setBusy();
      return;
    }
    send(input, generation);
  }

  // A task boundary: the browser paints what is drawn so far where a frame is due, and handles
  // the pointer, before the page goes on.
  function nextTask() {
    return new Promise((resolve) => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => resolve();
      channel.port2.postMessage(null);
    });
  }

  // The answer first, then the panels. Where the shift panel's batches take more than a frame
  // (a ResNet's: tens of ms), the page lets the browser paint the answer before it goes on, and
  // checks between the models' batches (and between the parts of a batch longer than 50 ms)
  // that no newer input (a new stroke, Clear) has come: if one has, the rest is dropped.
  // Where they are quick (LeNet-5 and an MLP: a few ms), everything is drawn in one task and
  // reaches the screen in the same frame: each pause costs a paint, and on a busy machine the
  // wait for the CPU too.
  async function send(input, gen) {
    inFlight = true;
    setBusy();
    const current = () => gen === generation;
    let stroke = null; // the finished stroke this answers: its times
    const end = strokeEnd;
    try {
      const answer = await runtime.classify(input, Boolean(meta && meta.features));
      if (answer.noFeatures && meta.features) {
        // the export has no feature model after all: predictions still work
        meta.features = false;
        showNoFeatures("This model has no feature maps to show.");
      }
      if (!current()) return;
      showAnswer(answer, { layers: false });
      setStatus("");
      if (end !== null && !drawing) {
        const record = { answer: null, frame: null, all: null };
        requestAnimationFrame(() => (record.frame = performance.now() - end));
        stroke = record;
      }
      const staged = Boolean(teach && !drawing && teach.slow());
      const step = async () => {
        if (!staged) return current();
        if (stroke && stroke.answer === null) stroke.answer = performance.now() - end;
        await nextTask();
        return current();
      };
      if (!(await step())) return;
      if (layersView) drawLayers(answer);
      // The shift panel runs 49 inputs per model: once the stroke is over, not mid-stroke.
      if (!teach || drawing) return;
      try {
        // the server frames its own copy: the page frames one too, to show and shift it
        if (!answer.input) answer.input = await runtime.inputOf(input); // throws: says why
        if (!current()) return;
        if (playground) playground.update(answer.input);
        if (!(await teach.update(answer.input, step))) return;
        if (epochsView && (await step())) await epochsView.update(answer.input);
      } catch (err) {
        if (current()) {
          teach.clear();
          setStatus(`The shift panel could not run the models: ${err.message}`, true);
        }
      }
    } catch (err) {
      if (current()) {
        const prefix = err instanceof RefusedError ? runtime.refused : runtime.failed;
        setStatus(`${prefix}: ${err.message}`, true);
        if (input.file) hidePhoto();
      }
    } finally {
      inFlight = false;
      const next = pending;
      pending = null;
      if (next) {
        send(next, generation);
      } else {
        if (strokeEnd !== null && current() && !drawing) {
          const all = performance.now() - strokeEnd;
          timings.push(all);
          // drawn in one task, the answer reaches the screen with everything else
          const record = stroke || { answer: null, frame: null };
          if (record.answer === null) record.answer = all;
          record.all = all; // its frame may come later: the callback fills this record
          strokes.push(record);
          strokeEnd = null;
        }
        setBusy();
      }
    }
  }

  // ---------------------------------------------------------------------------- the server
  // `imgcls serve` with --api_key answers 401 on its API routes: the page asks for the key
  // once (an inline form), keeps it for the tab (sessionStorage) and sends it as X-API-Key.
  let keyPrompt = null;

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE);
    } catch (_) {
      return null; // storage disabled: the key is asked for again
    }
  }

  function askForKey(message) {
    if (!keyPrompt) {
      keyPrompt = new Promise((resolve) => {
        keyMessage.textContent = message;
        keyForm.hidden = false;
        keyInput.value = "";
        keyInput.focus();
        keyForm.onsubmit = (ev) => {
          ev.preventDefault();
          const key = keyInput.value.trim();
          if (!key) return;
          try {
            sessionStorage.setItem(KEY_STORE, key);
          } catch (_) {
            window.__imgclsKey = key;
          }
          keyForm.hidden = true;
          keyPrompt = null;
          resolve();
        };
      });
    }
    return keyPrompt;
  }

  async function api(path, options = {}) {
    for (;;) {
      const key = storedKey() || window.__imgclsKey || null;
      const headers = { Accept: "application/json", ...(options.headers || {}) };
      if (key) headers["X-API-Key"] = key;
      const resp = await fetch(path, { ...options, headers });
      if (resp.status !== 401) return resp;
      setStatus("The server asks for an API key.", true);
      await askForKey(
        key ? "That key was refused: check it and enter it again." : "This server needs an API key.",
      );
      setStatus("");
    }
  }

  async function serverRuntime() {
    // The page frames the drawing itself too (framing.js, equal to the server's framing pixel
    // for pixel), to show the input and send its 49 shifts as one JSON batch.
    await loadScript("static/framing.js");
    await loadScript("static/runtime-browser.js");
    let metaSeen = null;
    const post = (path, blob) =>
      api(path, {
        method: "POST",
        headers: { "Content-Type": blob.type || "application/octet-stream" },
        body: blob,
      });
    return {
      refused: "The server refused the image",
      failed: "No answer from the server",
      async metadata() {
        const resp = await api("metadata");
        if (!resp.ok) throw new Error(await errorDetail(resp));
        metaSeen = await resp.json();
        return metaSeen;
      },
      inputOf(input) {
        return window.imgclsBrowserRuntime.modelInput(input, { pad, meta: metaSeen, RefusedError });
      },
      // n uint8 inputs (row-major) as one JSON batch of [0, 1] pixels: /predict, or
      // /compare/predict for the model beside it (imgcls serve --compare).
      async runBatch(which, pixels, n) {
        const side = Math.round(Math.sqrt(pixels.length / n));
        const images = [];
        for (let i = 0; i < n; i++) {
          const rows = [];
          for (let y = 0; y < side; y++) {
            const o = (i * side + y) * side;
            rows.push("[" + Array.from(pixels.subarray(o, o + side), (v) => v / 255).join(",") + "]");
          }
          images.push("[" + rows.join(",") + "]");
        }
        const body = new Blob(['{"pixels":[' + images.join(",") + "]}"], { type: "application/json" });
        const resp = await post(which === "compare" ? "compare/predict" : "predict", body);
        if (!resp.ok) throw new RefusedError(await errorDetail(resp));
        const answer = await resp.json();
        if (!Array.isArray(answer.predictions) || answer.predictions.length !== n) {
          throw new Error(`${n} images sent, ${(answer.predictions || []).length} answers came`);
        }
        return answer.predictions.map((p) => p.probabilities);
      },
      async classify(input, wantFeatures) {
        const blob = input.pad ? await padBlob() : input.file;
        let noFeatures = false;
        let resp = await post(wantFeatures ? "features" : "predict", blob);
        if (wantFeatures && resp.status === 404) {
          noFeatures = true;
          resp = await post("predict", blob);
        }
        if (!resp.ok) throw new RefusedError(await errorDetail(resp));
        const answer = await resp.json();
        answer.noFeatures = noFeatures;
        return answer;
      },
    };
  }

  // ---------------------------------------------------------------------------- the browser
  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const el = document.createElement("script");
      el.src = src;
      el.onload = resolve;
      el.onerror = () => reject(new Error(`${src} did not load`));
      document.head.append(el);
    });
  }

  function buildTeach() {
    const root = $("#shift-panel");
    const shape = (meta.input && meta.input.shape) || ["batch", 1, 28, 28];
    if (!window.imgclsTeach || Number(shape[1]) !== 1 || Number(shape[2]) !== Number(shape[3])) {
      root.hidden = true; // the shift panel shows one-channel square inputs
      return;
    }
    const models = [{ role: "model", meta }];
    if (meta.compare) models.push({ role: "compare", meta: meta.compare });
    teach = window.imgclsTeach.create({
      root: $("#shift-body"),
      models,
      classNames: classNames(),
      size: Number(shape[2]),
      run: (which, pixels, n) => runtime.runBatch(which, pixels, n),
    });
    root.hidden = false;
  }

  // The kernel playground, with the model's first-layer kernels where the site has weights.
  function buildPlayground() {
    const panel = $("#kernel-panel");
    const shape = (meta.input && meta.input.shape) || ["batch", 1, 28, 28];
    if (!window.imgclsPlayground || !teach) {
      panel.hidden = true;
      return;
    }
    let model = null;
    const first = Array.isArray(meta.layers) ? meta.layers.find((e) => e.kind === "conv") : null;
    const W = first && weights ? weights.get(`net.${first.name}.weight`) : null;
    if (W && first.in_channels === 1 && first.kernel[0] === first.kernel[1]) {
      const K = first.kernel[0];
      const kernels = [];
      for (let c = 0; c < first.out_channels; c++) {
        const k = [];
        for (let i = 0; i < K; i++) k.push(Array.from(W.subarray((c * K + i) * K, (c * K + i + 1) * K)));
        kernels.push({ channel: c, k });
      }
      model = { layer: first.name, kernels };
    }
    playground = window.imgclsPlayground.create({ root: $("#kernel-body"), size: Number(shape[2]), model });
    panel.hidden = false;
  }

  // Watch it learn (epochs.js): a site built with --epochs carries a run's snapshots.
  async function buildEpochs() {
    const panel = $("#epochs-panel");
    if (RUNTIME !== "browser" || !meta.epochs || !teach) return;
    panel.hidden = false;
    try {
      await loadScript("static/epochs.js");
      epochsView = await window.imgclsEpochs.create({
        root: $("#epochs-body"),
        meta,
        classNames: classNames(),
        size: Number(meta.input.shape[2]),
      });
    } catch (err) {
      $("#epochs-body").textContent = `The run's snapshots could not be loaded: ${err.message}`;
    }
  }

  async function browserRuntime() {
    await loadScript("static/ort.wasm.min.js");
    await loadScript("static/framing.js");
    await loadScript("static/runtime-browser.js");
    return window.imgclsBrowserRuntime.create({ pad, RefusedError });
  }

  // ---------------------------------------------------------------------------- answers
  // The class and its bars, and the layer panel unless `layers` is false (a stroke's answer
  // draws it after the bars: send()).
  function showAnswer(answer, { layers = true } = {}) {
    const names = classNames();
    const probs = answer.probabilities || [];
    predictionEl.dataset.label = String(answer.label);
    predictionEl.textContent = answer.class_name ?? names[answer.label] ?? String(answer.label);
    predictionEl.classList.remove("empty");
    const p = probs[answer.label];
    confidenceEl.textContent =
      typeof p === "number" ? `probability ${(100 * p).toFixed(1)} %` : "";
    barsEl.querySelectorAll(".bar").forEach((bar, i) => {
      const q = typeof probs[i] === "number" ? probs[i] : 0;
      bar.dataset.probability = String(q);
      bar.classList.toggle("top", i === answer.label);
      bar.querySelector(".bar-fill").style.width = `${(100 * q).toFixed(2)}%`;
      bar.querySelector(".bar-value").textContent = `${(100 * q).toFixed(1)} %`;
    });
    if (layers && layersView) drawLayers(answer);
  }

  function decodeBase64(text) {
    const bin = atob(text);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function drawLayers(answer) {
    const maps = Array.isArray(answer.maps) ? answer.maps : [];
    for (const m of maps) {
      const [c, h, w] = m.shape;
      if (!m.bytes) m.bytes = decodeBase64(m.data);
      if (m.bytes.length !== c * h * w) {
        setStatus(`Feature map ${m.label}: ${m.bytes.length} bytes for shape ${c}×${h}×${w}`, true);
        return;
      }
    }
    if (maps.length && !layersView.fits(maps)) {
      // the metadata had no (or another) layer list: the answer's maps say what there is
      meta.feature_maps = maps.map(({ label, kind, shape }) => ({ label, kind, shape }));
      meta.features = true;
      buildLayers();
    }
    layersView.draw(answer);
  }

  function clearAnswer() {
    delete predictionEl.dataset.label;
    predictionEl.textContent = "–";
    predictionEl.classList.add("empty");
    confidenceEl.textContent = "Draw something to start.";
    barsEl.querySelectorAll(".bar").forEach((bar) => {
      bar.dataset.probability = "0";
      bar.classList.remove("top");
      bar.querySelector(".bar-fill").style.width = "0%";
      bar.querySelector(".bar-value").textContent = "–";
    });
    if (layersView) layersView.clear();
  }

  function hidePhoto() {
    photoFigure.hidden = true;
    photoEl.removeAttribute("src");
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = null;
  }

  function clearAll() {
    generation += 1; // drops any answer still on its way
    pending = null;
    drawing = false;
    resetPad();
    hidePhoto();
    uploadEl.value = "";
    clearAnswer();
    if (teach) teach.clear();
    if (playground) playground.clear();
    if (epochsView) epochsView.clear();
    setStatus("Cleared.");
    setBusy();
  }

  photoEl.addEventListener("error", () => {
    // not an image the browser can show (the server says why in the status line)
    if (photoEl.getAttribute("src")) hidePhoto();
  });

  $("#clear").addEventListener("click", clearAll);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      ev.preventDefault();
      clearAll();
    }
  });

  uploadEl.addEventListener("change", () => {
    const file = uploadEl.files && uploadEl.files[0];
    if (!file) return;
    resetPad();
    clearAnswer();
    hidePhoto();
    photoUrl = URL.createObjectURL(file);
    photoEl.src = photoUrl;
    photoFigure.hidden = false;
    setStatus(`Reading ${file.name}…`);
    submit({ file });
  });

  resetPad();
  buildBars();
  loadMetadata();
})();
