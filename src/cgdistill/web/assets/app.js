// cgdistill's web page: runs the exported generator with onnxruntime-web, on a photo or the camera.
// No framework and no bundler: one module, the runtime imported from ./ort/ beside it.
//
// Pixels go in and come out exactly as `cgdistill translate` converts them (forward.translate_batch):
// uint8 / 127.5 - 1 in float32, padded to the generator's multiple by reflection split over both sides
// (replication when a side is too small to reflect), the output cropped back, (y + 1) * 127.5 in
// float32, rounded half to even and clamped, so a photo translated here matches the command's PNG.

const site = JSON.parse(document.getElementById("site").textContent);
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

// A sentence the visitor can act on; any other exception is a bug, reported as such.
class PageError extends Error {}

function sentence(error) {
  if (error instanceof PageError) return error.message;
  const detail = (error && error.message) || String(error);
  return `Something went wrong (${detail}); reload the page, and if it happens again, export the page again with cgdistill export --web.`;
}

function setState(state) {
  document.body.dataset.state = state;
}

function fail(error) {
  setState("error");
  $("status").hidden = true;
  $("error").textContent = sentence(error);
  $("error").hidden = false;
  $("backend").textContent = "nothing: the page could not start";
}

function say(id, text) {
  const element = $(id);
  element.textContent = text || "";
  element.hidden = !text;
}

// --- Pixels, as cgdistill translate converts them ----------------------------------------------------

const TO_INPUT = new Float32Array(256);
for (let v = 0; v < 256; v++) TO_INPUT[v] = Math.fround(Math.fround(v / 127.5) - 1);

function roundHalfEven(v) {
  const r = Math.round(v); // rounds halves up
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// (y + 1) * 127.5 in float32; stored into ImageData's Uint8ClampedArray, which clamps to 0..255 and rounds
// halves to even as the command does (ECMAScript's ToUint8Clamp; NaN becomes 0): 3.3 ms a 320x240 frame
// with the rounding written out here, 0.9 ms this way.
function toPixelValue(y) {
  return Math.fround(Math.fround(y + 1) * 127.5);
}

// translate.padding_to_multiple: both sides up to a multiple (and at least `minimum`), split evenly.
function padding(height, width, multiple, minimum = 8) {
  const up = (n) => Math.ceil(n / multiple) * multiple;
  const padH = Math.max(up(height), up(minimum)) - height;
  const padW = Math.max(up(width), up(minimum)) - width;
  const top = Math.floor(padH / 2);
  const left = Math.floor(padW / 2);
  const reflect = Math.max(left, padW - left) < width && Math.max(top, padH - top) < height;
  return { height: height + padH, width: width + padW, top, left, reflect };
}

function sourceIndex(i, n, reflect) {
  if (i < 0) return reflect ? -i : 0;
  if (i >= n) return reflect ? 2 * (n - 1) - i : n - 1;
  return i;
}

function toTensorData(rgba, width, height, plan) {
  const plane = plan.height * plan.width;
  const data = new Float32Array(3 * plane);
  const columns = new Int32Array(plan.width);
  for (let x = 0; x < plan.width; x++) columns[x] = sourceIndex(x - plan.left, width, plan.reflect);
  for (let y = 0; y < plan.height; y++) {
    const row = sourceIndex(y - plan.top, height, plan.reflect) * width;
    const o = y * plan.width;
    for (let x = 0; x < plan.width; x++) {
      const p = (row + columns[x]) * 4;
      data[o + x] = TO_INPUT[rgba[p]];
      data[plane + o + x] = TO_INPUT[rgba[p + 1]];
      data[2 * plane + o + x] = TO_INPUT[rgba[p + 2]];
    }
  }
  return data;
}

function toImageData(out, width, height, plan, rgba) {
  const plane = plan.height * plan.width;
  const image = new ImageData(width, height);
  const px = image.data;
  for (let y = 0; y < height; y++) {
    const o = (y + plan.top) * plan.width + plan.left;
    for (let x = 0; x < width; x++) {
      const q = (y * width + x) * 4;
      px[q] = toPixelValue(out[o + x]);
      px[q + 1] = toPixelValue(out[plane + o + x]);
      px[q + 2] = toPixelValue(out[2 * plane + o + x]);
      px[q + 3] = rgba[q + 3]; // the input's transparency goes back on, as translate does
    }
  }
  return image;
}

// translate.fit_max_side: shrink (never enlarge) to fit, keeping the aspect ratio; Python rounds halves to even.
function fitMaxSide(width, height, maxSide) {
  const longest = Math.max(width, height);
  if (longest <= maxSide) return [width, height];
  const scale = maxSide / longest;
  return [Math.max(1, roundHalfEven(width * scale)), Math.max(1, roundHalfEven(height * scale))];
}

// --- The runtime and the model ------------------------------------------------------------------------

let ort = null;
let session = null;
// Models up to this many multiply-adds at 256x256 run on the page's thread (`fastest`: 1.2 G; `fast`: 5.4 G);
// an older export without the figure runs in a worker.
const MAIN_THREAD_MACS = 2e9;
let queue = Promise.resolve(); // one inference at a time: the photo and the camera share the session

async function loadRuntime() {
  if (location.protocol === "file:") {
    throw new PageError(
      "This page must be served over HTTP, not opened as a file: run `cgdistill serve FOLDER` and open the address it prints, or put the folder on a web server.",
    );
  }
  if (typeof WebAssembly !== "object") {
    throw new PageError(
      "This browser cannot run WebAssembly, which the model needs: open the page in a current Chrome, Edge, Firefox or Safari.",
    );
  }
  try {
    ort = await import(`./${site.runtime.entry}`);
  } catch (error) {
    throw new PageError(
      `The runtime ${site.runtime.entry} did not load (${error.message}): copy the whole folder that cgdistill export --web wrote, or export it again.`,
    );
  }
  const cores = navigator.hardwareConcurrency || 1;
  const wanted = Number.parseInt(params.get("threads"), 10) || Math.min(cores, 8);
  // Threads need SharedArrayBuffer, which browsers give only to cross-origin isolated pages (COOP + COEP).
  ort.env.wasm.numThreads = self.crossOriginIsolated ? wanted : 1;
  ort.env.logLevel = "error";
}

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchModel() {
  const file = site.model.file;
  let response;
  try {
    response = await fetch(file);
  } catch (error) {
    throw new PageError(`The model ${file} could not be fetched (${error.message}): check the connection to this site and reload.`);
  }
  if (!response.ok) {
    throw new PageError(
      `The model ${file} is missing from this site (HTTP ${response.status}): copy the whole folder that cgdistill export --web wrote, or export it again.`,
    );
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (self.crypto && crypto.subtle) {
    // crypto.subtle exists on secure pages only (https, or 127.0.0.1); elsewhere onnxruntime's own checks remain.
    const digest = hex(await crypto.subtle.digest("SHA-256", bytes));
    if (digest !== site.model.sha256) {
      throw new PageError(
        `The model ${file} is damaged (${bytes.length.toLocaleString("en")} bytes that are not the file this page was exported with): copy it again from the export, or export the page again with cgdistill export --web.`,
      );
    }
  }
  return bytes;
}

function wasmBackend() {
  const threads = ort.env.wasm.numThreads;
  const where = ort.env.wasm.proxy ? "in a worker" : "on the page's thread";
  if (self.crossOriginIsolated) return `WebAssembly (SIMD, ${threads} thread${threads === 1 ? "" : "s"}, ${where})`;
  return "WebAssembly (SIMD, 1 thread: this site does not send the cross-origin isolation headers that threads need; see the cgdistill docs)";
}

async function createSession(bytes) {
  let note = "";
  if (params.get("backend") !== "wasm" && navigator.gpu) {
    let adapter = null;
    try {
      adapter = await navigator.gpu.requestAdapter();
    } catch {
      adapter = null;
    }
    if (adapter) {
      try {
        session = await ort.InferenceSession.create(bytes, { executionProviders: ["webgpu"] });
        return "WebGPU";
      } catch (error) {
        note = ` (WebGPU could not run the model: ${firstLine(error.message)})`;
      }
    }
  }
  if (!note) {
    // On WebAssembly a dear model runs in a worker, so the page stays responsive while a frame is computed.
    // A cheap one runs on the page's own thread: without the worker's hop the camera ran 1.1-1.2x the frames/s
    // (`fastest`, 320x240, 2 cores: docs/benchmarks.md), and the page waits only tens of milliseconds a frame.
    // (The WebGPU provider runs beside the page's thread already; after its failure the set-up is done.)
    const asked = params.get("proxy");
    ort.env.wasm.proxy = asked !== null ? asked !== "0" : !(site.model.macs_256 <= MAIN_THREAD_MACS);
  }
  try {
    session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  } catch (error) {
    throw new PageError(
      `onnxruntime-web could not load the model ${site.model.file} (${firstLine(error.message)}): export the page again with cgdistill export --web.`,
    );
  }
  return wasmBackend() + note;
}

function firstLine(text) {
  return String(text || "").split("\n")[0].slice(0, 200);
}

function exclusive(work) {
  const result = queue.then(work);
  queue = result.catch(() => {});
  return result;
}

// One image (ImageData) through the model: the translated ImageData and the model's time alone.
async function translate(image) {
  const plan = padding(image.height, image.width, site.model.multiple);
  const data = toTensorData(image.data, image.width, image.height, plan);
  const input = new ort.Tensor("float32", data, [1, 3, plan.height, plan.width]);
  const { outputs, modelMs } = await exclusive(async () => {
    const start = performance.now();
    const outputs = await session.run({ [site.model.input]: input });
    return { outputs, modelMs: performance.now() - start };
  });
  const output = outputs[site.model.output];
  const result = toImageData(await output.getData(), image.width, image.height, plan, image.data);
  output.dispose();
  return { image: result, modelMs };
}

// --- A photo ------------------------------------------------------------------------------------------

const DECODE = { colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "from-image" };
let downloadUrl = null;

async function decode(file, options = {}) {
  try {
    return await createImageBitmap(file, { ...DECODE, ...options });
  } catch {
    throw new PageError(
      `${file.name || "That file"} is not an image this browser can read: pick a photo (JPEG, PNG, WebP, GIF, AVIF or BMP).`,
    );
  }
}

async function translatePhoto(file) {
  const section = $("photo");
  section.dataset.state = "working";
  say("photo-message", "");
  try {
    let bitmap = await decode(file);
    const [width, height] = fitMaxSide(bitmap.width, bitmap.height, site.max_side);
    const original = [bitmap.width, bitmap.height];
    const scaled = width !== bitmap.width || height !== bitmap.height;
    if (scaled) {
      bitmap.close();
      bitmap = await decode(file, { resizeWidth: width, resizeHeight: height, resizeQuality: "high" });
    }
    const before = $("photo-before");
    before.width = width;
    before.height = height;
    const context = before.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    bitmap.close();
    const { image, modelMs } = await translate(context.getImageData(0, 0, width, height));
    const after = $("photo-after");
    after.width = width;
    after.height = height;
    after.getContext("2d").putImageData(image, 0, 0);
    const size = `${width} × ${height} pixels`;
    $("photo-caption").textContent = scaled
      ? `Scaled from ${original[0]} × ${original[1]} to ${size} to fit the page's limit of ${site.max_side} pixels, then translated in ${Math.round(modelMs)} ms. Drag across the picture to compare.`
      : `${size}, translated in ${Math.round(modelMs)} ms. Drag across the picture to compare.`;
    $("photo-result").hidden = false;
    await offerDownload(after, file.name);
    section.dataset.state = "done";
  } catch (error) {
    section.dataset.state = "error";
    say("photo-message", sentence(error));
  }
}

async function offerDownload(canvas, name) {
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = URL.createObjectURL(blob);
  const link = $("photo-download");
  const stem = (name || "photo").replace(/\.[^.]*$/, "") || "photo";
  link.href = downloadUrl;
  link.download = `${stem}-${site.info.direction}.png`;
  link.hidden = false;
}

// --- The camera -----------------------------------------------------------------------------------------

let camera = null; // { stream, active }

function cameraError(error) {
  switch (error && error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "The camera is blocked for this page: allow it in the browser (the camera icon in the address bar, or the site's settings) and press Start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found: connect one and press Start again, or translate a photo instead.";
    case "NotReadableError":
    case "AbortError":
      return "The camera is in use by another program or could not start: close that program and press Start again.";
    default:
      return `The camera could not start (${(error && error.name) || "error"}: ${(error && error.message) || error}); press Start again, or translate a photo instead.`;
  }
}

async function startCamera() {
  say("camera-message", "");
  clearCameraStats();
  const section = $("camera");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    section.dataset.state = "error";
    say(
      "camera-message",
      self.isSecureContext
        ? "This browser gives pages no camera: open the page in a current Chrome, Edge, Firefox or Safari, or translate a photo instead."
        : "The camera works only on secure pages: open this page over https, or at http://127.0.0.1 with cgdistill serve.",
    );
    return;
  }
  const [width, height] = $("camera-size").value.split("x").map(Number);
  $("camera-start").disabled = true;
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: width }, height: { ideal: height } },
      audio: false,
    });
  } catch (error) {
    section.dataset.state = "error";
    say("camera-message", cameraError(error));
    $("camera-start").disabled = false;
    return;
  }
  const video = $("camera-video");
  video.srcObject = stream;
  try {
    await video.play();
  } catch (error) {
    stream.getTracks().forEach((track) => track.stop());
    section.dataset.state = "error";
    say("camera-message", cameraError(error));
    $("camera-start").disabled = false;
    return;
  }
  camera = { stream, active: true };
  section.dataset.state = "on";
  $("camera-start").hidden = true;
  $("camera-stop").hidden = false;
  $("camera-size").disabled = true;
  cameraLoop(camera, width, height).catch((error) => {
    stopCamera();
    section.dataset.state = "error";
    say("camera-message", sentence(error));
  });
}

// A new start shows its own figures, never the last run's, from the moment Start is pressed.
function clearCameraStats() {
  const stats = $("camera-stats");
  for (const key of ["fps", "modelMs", "frames", "shownAt"]) delete stats.dataset[key];
  $("camera-fps").textContent = "\u2013";
  $("camera-model-ms").textContent = "\u2013";
}

function stopCamera() {
  if (camera) {
    camera.active = false;
    camera.stream.getTracks().forEach((track) => track.stop());
    camera = null;
  }
  $("camera-video").srcObject = null;
  $("camera").dataset.state = "off";
  $("camera-start").hidden = false;
  $("camera-start").disabled = false;
  $("camera-stop").hidden = true;
  $("camera-size").disabled = false;
}

function yieldToBrowser() {
  // A task boundary: the page paints and takes input between frames, without waiting for a display refresh.
  // The timer is set from a message's task: set from the loop's own timer task, it would be a nested timer,
  // which the browser holds back at least 4 ms (4.6 ms a frame against 1.9 ms this way, at 320x240). A
  // message alone would not do: a chain of messages starved the page's painting.
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      setTimeout(resolve, 0);
    };
    channel.port2.postMessage(null);
  });
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function cameraLoop(run, width, height) {
  const video = $("camera-video");
  const grab = document.createElement("canvas");
  grab.width = width;
  grab.height = height;
  const grabContext = grab.getContext("2d", { willReadFrequently: true });
  const output = $("camera-output");
  output.width = width;
  output.height = height;
  const outputContext = output.getContext("2d");
  const stats = $("camera-stats");
  const finished = []; // when each recent frame was shown
  const modelTimes = [];
  let frames = 0;
  while (run.active) {
    if (video.readyState < 2 || !video.videoWidth) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      continue;
    }
    // Cover the frame: crop the camera picture to the chosen aspect ratio, centred.
    const scale = Math.min(video.videoWidth / width, video.videoHeight / height);
    const sw = width * scale;
    const sh = height * scale;
    grabContext.drawImage(video, (video.videoWidth - sw) / 2, (video.videoHeight - sh) / 2, sw, sh, 0, 0, width, height);
    const { image, modelMs } = await translate(grabContext.getImageData(0, 0, width, height));
    if (!run.active) break;
    outputContext.putImageData(image, 0, 0);
    frames += 1;
    const now = performance.now();
    finished.push(now);
    modelTimes.push(modelMs);
    while (finished.length > 2 && now - finished[0] > 2000) finished.shift(); // a two-second window
    if (modelTimes.length > 30) modelTimes.shift();
    if (finished.length > 1) {
      const fps = ((finished.length - 1) * 1000) / (now - finished[0]);
      const ms = median(modelTimes);
      $("camera-fps").textContent = fps.toFixed(1);
      $("camera-model-ms").textContent = ms.toFixed(0);
      stats.dataset.fps = fps.toFixed(2);
      stats.dataset.modelMs = ms.toFixed(1);
    }
    stats.dataset.frames = String(frames);
    stats.dataset.shownAt = now.toFixed(2); // performance.now() of this frame: scripts time frames by it
    await yieldToBrowser();
  }
}

// For scripts (benchmarks/browser.py): the model alone, without the camera, on one input of the given size;
// the median of `runs` session.run times (ms) after one warm-up run.
async function timeModel(width, height, runs = 10) {
  const image = new ImageData(width, height);
  await translate(image);
  const times = [];
  for (let i = 0; i < runs; i++) times.push((await translate(image)).modelMs);
  return median(times);
}

// --- Wiring -----------------------------------------------------------------------------------------------

function wire() {
  const input = $("photo-input");
  input.disabled = false;
  input.addEventListener("change", () => {
    if (input.files && input.files[0]) translatePhoto(input.files[0]);
  });
  const drop = $("drop");
  // A file dropped anywhere else would make the browser leave the page to show it.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
  drop.addEventListener("dragover", () => drop.classList.add("over"));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    drop.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) translatePhoto(file);
  });
  const slider = $("photo-slider");
  slider.addEventListener("input", () => $("compare").style.setProperty("--split", `${slider.value}%`));
  $("camera-start").disabled = false;
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
}

async function main() {
  try {
    await loadRuntime();
    const bytes = await fetchModel();
    const backend = await createSession(bytes);
    // One small run finishes the runtime's lazy set-up, so the first photo's time is the model's.
    const warm = new ImageData(16, 16);
    await translate(warm);
    $("backend").textContent = backend;
    $("status").textContent = `Ready: the model runs on ${backend}.`;
  } catch (error) {
    fail(error);
    return;
  }
  wire();
  window.cgdistill = { timeModel };
  setState("ready");
}

main();
