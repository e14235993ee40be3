// siglip web page: text -> image search, image -> image search, zero-shot classification.
// Plain browser JavaScript, no build step and no network beyond this server. Every URL is relative, so the page
// works under any route prefix (a reverse proxy, Ray Serve's route_prefix).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORAGE = "siglip.apiKey";
  // Images above this size are downscaled in the browser before upload: the model sees 224-512 px anyway, and the
  // server caps body size and pixel count. Smaller files are sent byte for byte, so scores equal the CLI's.
  const UPLOAD_MAX_BYTES = 6 * 1024 * 1024;
  const UPLOAD_MAX_SIDE = 2048;

  const state = { queryImage: null, queryImageName: "", zsImage: null, viewerHit: null, searchToken: 0 };

  // ---- HTTP -----------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(type, message, status) {
      super(message);
      this.type = type;
      this.status = status;
    }
  }

  function apiKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch (_) {
      return "";
    }
  }

  function headers(extra) {
    const result = Object.assign({ Accept: "application/json" }, extra || {});
    const key = apiKey();
    if (key) result.Authorization = "Bearer " + key;
    return result;
  }

  async function request(method, path, body) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError("network_error", "The server cannot be reached (" + err.message + ").", 0);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      let message = error.message || response.statusText || "request failed";
      if (response.status === 401) message += " Set the API key with the key button at the top right.";
      if (response.status === 503 && response.headers.get("Retry-After")) {
        message += " Retry in " + response.headers.get("Retry-After") + " s.";
      }
      throw new ApiError(error.type || "http_" + response.status, message, response.status);
    }
    return data;
  }

  // Thumbnails: a plain <img src> when no key is needed (browser caching and lazy loading), else fetched with the
  // Authorization header and shown from a blob URL.
  function setThumbnail(img, url) {
    if (!apiKey()) {
      img.src = url;
      return;
    }
    fetch(url, { headers: headers() })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.statusText))))
      .then((blob) => {
        img.src = URL.createObjectURL(blob);
      })
      .catch(() => img.classList.add("broken"));
  }

  // ---- Response shapes (documented in siglip/serve/app.py) -----------------------------------------------
  // A search hit: {id, collection, path, row, score, thumbnail: "/v1/items/{id}/thumbnail" | null (text items)}.
  // Relative URLs keep the page working under a route prefix; the larger size serves high-density screens.
  function thumbnailUrl(hit, size) {
    if (!hit.thumbnail) return null;
    return hit.thumbnail.replace(/^\//, "") + "?size=" + (size || (window.devicePixelRatio > 1.5 ? 512 : 256));
  }

  function baseName(path) {
    const parts = String(path || "").split(/[\\/]/);
    return parts[parts.length - 1] || String(path);
  }

  // ---- Status and model name ------------------------------------------------------------------------------
  async function refreshStatus() {
    const status = $("status");
    try {
      const response = await fetch("readyz", { headers: { Accept: "application/json" } });
      let data = {};
      try {
        data = await response.json();
      } catch (_) {
        data = {};
      }
      status.dataset.state = response.ok ? "ready" : "down";
      $("status-text").textContent = response.ok ? "ready" : "not ready";
      if (data.model) $("model-name").textContent = baseName(data.model);
      if (Array.isArray(data.collections)) showCollections(data.collections);
      if (typeof data.hypothesis_template === "string") showDefaultTemplate(data.hypothesis_template);
    } catch (_) {
      status.dataset.state = "down";
      $("status-text").textContent = "offline";
    }
  }

  // The server's zero-shot template (the model's own, as siglip.pipeline and the CLI take it): the template field's
  // placeholder, and the line under it, say which one an empty field means.
  function showDefaultTemplate(template) {
    $("template").placeholder = template;
    $("template-default").textContent = "empty: the model's default, " + template;
  }

  // Collections: their size beside the model name, and a picker when the server loaded more than one.
  function showCollections(collections) {
    const count = collections.reduce((sum, c) => sum + c.count, 0);
    $("model-name").textContent += " · " + count.toLocaleString() + (count === 1 ? " item" : " items");
    const picker = $("collection");
    picker.hidden = collections.length < 2;
    if (picker.options.length - 1 === collections.length) return;
    picker.length = 1;
    for (const c of collections) picker.add(new Option(c.name + " (" + c.count.toLocaleString() + ")", c.name));
  }

  // ---- Tabs -----------------------------------------------------------------------------------------------
  function selectTab(tab) {
    for (const other of document.querySelectorAll(".tab")) {
      const on = other === tab;
      other.setAttribute("aria-selected", String(on));
      $(other.dataset.panel).hidden = !on;
    }
  }

  // ---- Images from files ----------------------------------------------------------------------------------
  function readAsDataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("cannot read the file"));
      reader.readAsDataURL(blob);
    });
  }

  async function imageFromFile(file) {
    if (!file) throw new ApiError("invalid_image", "No file was chosen.", 0);
    if (file.type && !file.type.startsWith("image/")) {
      throw new ApiError("invalid_image", file.name + " is not an image (" + file.type + ").", 0);
    }
    const original = await readAsDataUrl(file);
    if (file.size <= UPLOAD_MAX_BYTES) return original;
    const img = new Image();
    await new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = () => reject(new ApiError("invalid_image", file.name + " cannot be decoded by the browser.", 0));
      img.src = original;
    });
    const scale = Math.min(1, UPLOAD_MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(img.naturalWidth * scale);
    canvas.height = Math.round(img.naturalHeight * scale);
    canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
    return canvas.toDataURL("image/jpeg", 0.92);
  }

  async function blobFromUrl(url) {
    const response = await fetch(url, { headers: headers() });
    if (!response.ok) throw new ApiError("http_" + response.status, "cannot load " + url, response.status);
    return readAsDataUrl(await response.blob());
  }

  // ---- Search ---------------------------------------------------------------------------------------------
  // Errors show the server's machine-readable type and its message (which names the bad field or item).
  function showError(box, err) {
    box.hidden = false;
    box.textContent = "";
    const code = document.createElement("code");
    code.textContent = err.type || "error";
    box.append(code, document.createTextNode(err.message || String(err)));
  }

  function showSkeletons(count) {
    const grid = $("results");
    grid.textContent = "";
    for (let i = 0; i < count; i++) {
      const tile = document.createElement("div");
      tile.className = "tile skeleton";
      tile.innerHTML = '<div class="ph"></div><div class="line"></div><div class="line short"></div>';
      grid.append(tile);
    }
  }

  function renderHits(hits) {
    const grid = $("results");
    grid.textContent = "";
    const top = hits.length ? Math.max(...hits.map((h) => h.score)) : 1;
    const bottom = hits.length ? Math.min(...hits.map((h) => h.score)) : 0;
    hits.forEach((hit, rank) => {
      const tile = document.createElement("figure");
      tile.className = "tile";
      tile.tabIndex = 0;
      tile.style.animationDelay = Math.min(rank * 18, 400) + "ms";
      tile.dataset.id = String(hit.id);
      let img;
      if (hit.thumbnail) {
        img = document.createElement("img");
        img.loading = "lazy";
        img.decoding = "async";
        img.alt = baseName(hit.path);
        setThumbnail(img, thumbnailUrl(hit));
      } else {  // an item of a text collection: its text is the preview
        img = document.createElement("blockquote");
        img.className = "text-item";
        img.textContent = hit.path;
      }
      const badge = document.createElement("span");
      badge.className = "rank";
      badge.textContent = "#" + (rank + 1);
      const caption = document.createElement("figcaption");
      const name = document.createElement("div");
      name.className = "tile-name";
      name.textContent = baseName(hit.path);
      name.title = hit.path;
      const score = document.createElement("div");
      score.className = "tile-score";
      const meter = document.createElement("span");
      meter.className = "meter";
      const fill = document.createElement("span");
      // Cosine scores of one query sit in a narrow band: the meter shows where a hit lies within this result set.
      const spread = top - bottom;
      fill.style.width = (spread > 1e-9 ? 15 + (85 * (hit.score - bottom)) / spread : 100) + "%";
      meter.append(fill);
      const value = document.createElement("span");
      value.className = "score";
      value.textContent = hit.score.toFixed(3);
      score.append(meter, value);
      caption.append(name, score);
      tile.append(img, badge, caption);
      if (hit.thumbnail) {
        tile.addEventListener("click", () => openViewer(hit));
        tile.addEventListener("keydown", (event) => {
          if (event.key === "Enter") openViewer(hit);
        });
      }
      grid.append(tile);
    });
  }

  async function runSearch() {
    const text = $("query").value.trim();
    const image = state.queryImage;
    const k = Number($("top-k").value);
    if (!text && !image) {
      $("query").focus();
      return;
    }
    const token = ++state.searchToken;
    const button = $("search-button");
    const started = performance.now();
    $("search-error").hidden = true;
    $("search-empty").hidden = true;
    $("search-meta").textContent = "Searching…";
    $("results").setAttribute("aria-busy", "true");
    button.disabled = true;
    button.classList.add("busy");
    showSkeletons(Math.min(k, 12));
    try {
      const collection = $("collection").value;
      const query = image ? { image, k } : { query: text, k };
      if (collection) query.collection = collection;
      const data = image
        ? await request("POST", "v1/search", query)
        : await request("GET", "v1/search?" + new URLSearchParams({ q: text, k: String(k), ...(collection && { collection }) }));
      if (token !== state.searchToken) return;
      const hits = data.results;
      renderHits(hits);
      const ms = Math.round(performance.now() - started);
      const what = image ? "similar to " + (state.queryImageName || "your image") : "for “" + text + "”";
      $("search-meta").textContent = hits.length + " results " + what + " · " + ms + " ms";
      if (!hits.length) {
        $("search-empty").hidden = false;
        $("search-empty").querySelector("p").textContent = "No items in this collection.";
      }
    } catch (err) {
      if (token !== state.searchToken) return;
      $("results").textContent = "";
      $("search-meta").textContent = "";
      showError($("search-error"), err);
    } finally {
      if (token === state.searchToken) {
        button.disabled = false;
        button.classList.remove("busy");
        $("results").setAttribute("aria-busy", "false");
      }
    }
  }

  function setQueryImage(dataUrl, name) {
    state.queryImage = dataUrl;
    state.queryImageName = name || "";
    $("query-image").hidden = !dataUrl;
    if (dataUrl) {
      $("query-image-preview").src = dataUrl;
      $("query-image-name").textContent = name || "";
      $("query").value = "";
    }
  }

  async function searchWithFile(file) {
    selectTab($("tab-search"));
    try {
      setQueryImage(await imageFromFile(file), file.name);
      await runSearch();
    } catch (err) {
      showError($("search-error"), err);
    }
  }

  // ---- Zero-shot ------------------------------------------------------------------------------------------
  function parseLabels(text) {
    const parts = text.includes("\n") ? text.split("\n") : text.split(",");
    const seen = new Set();
    return parts.map((s) => s.trim()).filter((s) => s && !seen.has(s) && seen.add(s));
  }

  function setZsImage(dataUrl) {
    state.zsImage = dataUrl;
    $("zs-preview").src = dataUrl;
    $("zs-preview").hidden = false;
    $("zs-hint").hidden = true;
  }

  function percent(score) {
    const value = 100 * score;
    if (value >= 10) return value.toFixed(1) + "%";
    if (value >= 0.01) return value.toPrecision(2) + "%";
    return value > 0 ? "<0.01%" : "0%";
  }

  // Tiny images (icons, the demo's 32 px shapes) are scaled up without smoothing: crisp instead of blurred.
  function markTiny(img) {
    img.onload = () => img.classList.toggle("tiny", img.naturalWidth < 96 && img.naturalHeight < 96);
  }

  function renderBars(scores) {
    const bars = $("bars");
    bars.textContent = "";
    scores.sort((a, b) => b.score - a.score);
    scores.forEach((item, rank) => {
      const row = document.createElement("div");
      row.className = "bar" + (rank === 0 ? " top" : "");
      row.style.animationDelay = rank * 30 + "ms";
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = item.label;
      label.title = item.label;
      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = percent(item.score);
      row.append(label, track, value);
      bars.append(row);
      requestAnimationFrame(() => requestAnimationFrame(() => (fill.style.width = Math.max(0, 100 * item.score) + "%")));
    });
  }

  async function runClassify() {
    const labels = parseLabels($("labels").value);
    const template = $("template").value;
    const box = $("classify-error");
    box.hidden = true;
    if (!state.zsImage) return showError(box, new ApiError("missing_image", "Choose an image to classify first.", 0));
    if (!labels.length) return showError(box, new ApiError("missing_labels", "Write at least one label.", 0));
    const button = $("classify-button");
    button.disabled = true;
    button.classList.add("busy");
    $("bars").setAttribute("aria-busy", "true");
    try {
      const body = { image: state.zsImage, candidate_labels: labels };
      if (template.trim()) body.hypothesis_template = template;
      const answer = await request("POST", "v1/classify", body);
      renderBars(answer.results[0]);
      $("template-used").textContent = "prompts: " + answer.hypothesis_template;
    } catch (err) {
      showError(box, err);
    } finally {
      button.disabled = false;
      button.classList.remove("busy");
      $("bars").setAttribute("aria-busy", "false");
    }
  }

  // ---- Viewer ---------------------------------------------------------------------------------------------
  function openViewer(hit) {
    state.viewerHit = hit;
    setThumbnail($("viewer-image"), thumbnailUrl(hit, 512));
    $("viewer-image").alt = baseName(hit.path);
    $("viewer-path").textContent = hit.path;
    $("viewer-score").textContent = "score " + hit.score.toFixed(4) + " · " + hit.collection + " · item " + hit.id;
    $("viewer").showModal();
  }

  async function viewerImage() {
    return blobFromUrl(thumbnailUrl(state.viewerHit, 512));
  }

  // ---- Wiring ---------------------------------------------------------------------------------------------
  function wireDrop(target, onFile, overlay) {
    let depth = 0;
    const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
    target.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth++;
      overlay.call(null, true);
    });
    target.addEventListener("dragover", (event) => {
      if (hasFiles(event)) event.preventDefault();
    });
    target.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) overlay.call(null, false);
    });
    target.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.stopPropagation();
      depth = 0;
      overlay.call(null, false);
      const file = event.dataTransfer.files[0];
      if (file) onFile(file);
    });
  }

  function init() {
    for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => selectTab(tab));
    markTiny($("zs-preview"));
    markTiny($("viewer-image"));
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      if ($("query").value.trim()) setQueryImage(null);
      runSearch();
    });
    $("search-file").addEventListener("change", (event) => {
      const file = event.target.files[0];
      event.target.value = "";
      if (file) searchWithFile(file);
    });
    $("query-image-clear").addEventListener("click", () => {
      setQueryImage(null);
      $("query").focus();
    });
    $("zs-file").addEventListener("change", async (event) => {
      const file = event.target.files[0];
      event.target.value = "";
      try {
        setZsImage(await imageFromFile(file));
        $("classify-error").hidden = true;
      } catch (err) {
        showError($("classify-error"), err);
      }
    });
    $("classify-form").addEventListener("submit", (event) => {
      event.preventDefault();
      runClassify();
    });
    $("zs-drop").addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") $("zs-file").click();
    });
    wireDrop(
      $("zs-drop"),
      async (file) => {
        try {
          setZsImage(await imageFromFile(file));
        } catch (err) {
          showError($("classify-error"), err);
        }
      },
      (on) => $("zs-drop").classList.toggle("over", on),
    );
    wireDrop(document.body, searchWithFile, (on) => ($("drop-overlay").hidden = !on));

    $("key-button").addEventListener("click", () => {
      $("key-panel").hidden = !$("key-panel").hidden;
      if (!$("key-panel").hidden) $("api-key").focus();
    });
    $("key-panel").addEventListener("submit", (event) => {
      event.preventDefault();
      try {
        localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
      } catch (_) {
        /* storage disabled: the key lasts for this page only */
      }
      $("key-panel").hidden = true;
    });
    $("key-clear").addEventListener("click", () => {
      $("api-key").value = "";
      try {
        localStorage.removeItem(KEY_STORAGE);
      } catch (_) {
        /* nothing stored */
      }
    });
    $("api-key").value = apiKey();

    $("viewer-similar").addEventListener("click", async () => {
      const hit = state.viewerHit;
      $("viewer").close();
      try {
        setQueryImage(await viewerImage(), baseName(hit.path));
        await runSearch();
      } catch (err) {
        showError($("search-error"), err);
      }
    });
    $("viewer-classify").addEventListener("click", async () => {
      $("viewer").close();
      try {
        setZsImage(await viewerImage());
        selectTab($("tab-classify"));
      } catch (err) {
        showError($("classify-error"), err);
      }
    });

    const params = new URLSearchParams(location.search);
    if (params.get("template")) $("template").value = params.get("template");
    if (params.get("labels")) $("labels").value = params.get("labels").split(",").join("\n");
    refreshStatus();
    setInterval(refreshStatus, 15000);
    if (params.get("q")) {
      $("query").value = params.get("q");
      runSearch();
    } else {
      $("query").focus();
    }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
