/* mmemo report and clip viewer: hand-written SVG, no library, nothing fetched (pages open from disk, where
 * fetch() is refused: clip data comes as <script> files that call mmemoClipLoaded). The data is window.MMEMO,
 * written by mmemo/pipeline/report.py. Time t (s) shows row floor(t * fps): row r is the instant r / fps and its
 * frame stays on screen until the next. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var DIMS = ["valence", "arousal"];
  var COLOR = { valence: "#1f6fb4", arousal: "#c7372f", gold: "#222", point: "#6a3d9a" };
  var TRAIL_S = 2; // seconds of trail on the valence-arousal plane

  function el(tag, attrs, parent, text) {
    var e = document.createElementNS(tag.indexOf("svg:") === 0 ? SVG : "http://www.w3.org/1999/xhtml",
      tag.replace("svg:", ""));
    for (var k in attrs || {}) if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v, d) { return v === null || v === undefined || !isFinite(v) ? "" : Number(v).toFixed(d === undefined ? 3 : d); }
  function signed(v) { return v === null || v === undefined ? "–" : (v >= 0 ? "+" : "") + v.toFixed(3); }
  function clock(t) {
    if (t < 60) return (Math.round(t * 100) / 100) + " s";
    var m = Math.floor(t / 60), s = t - 60 * m;
    return m + ":" + (s < 10 ? "0" : "") + s.toFixed(s % 1 ? 1 : 0);
  }
  function niceStep(span, n) {
    var raw = span / Math.max(1, n), p = Math.pow(10, Math.floor(Math.log10(raw))), steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= raw) return steps[i] * p;
    return 10 * p;
  }
  /* "M x y L x y ..." through the finite points; a null breaks the line (unlabelled rows). Long clips are thinned
   * to about two points per pixel, keeping each stretch's extreme so that peaks survive. */
  function pathOf(ys, x, y, width) {
    var n = ys.length, stride = Math.max(1, Math.floor(n / Math.max(1, 2 * width))), d = [], pen = false;
    for (var i = 0; i < n; i += stride) {
      var v = ys[i];
      for (var j = i + 1; j < Math.min(n, i + stride); j++) {
        if (ys[j] !== null && (v === null || Math.abs(ys[j]) > Math.abs(v))) v = ys[j];
      }
      if (v === null) { pen = false; continue; }
      d.push((pen ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1));
      pen = true;
    }
    return d.join("");
  }

  /* ------------------------------------------------------------------------------------------ learning curves */
  function lineChart(parent, title, xs, series, yRange, mark) {
    var W = 540, H = 250, L = 46, R = 12, T = 50, B = 30;
    var svg = el("svg:svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title }, parent);
    var all = [];
    series.forEach(function (s) { s.y.forEach(function (v) { if (v !== null && isFinite(v)) all.push(v); }); });
    if (!xs.length || !all.length) return svg;
    var lo = yRange ? Math.min(yRange[0], Math.min.apply(null, all)) : Math.min.apply(null, all);
    var hi = yRange ? Math.max(yRange[1], Math.max.apply(null, all)) : Math.max.apply(null, all);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    var x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
    var X = function (v) { return L + (W - L - R) * (v - x0) / (x1 - x0); };
    var Y = function (v) { return T + (H - T - B) * (1 - (v - lo) / (hi - lo)); };
    el("svg:text", { x: L, y: 14, "font-weight": 600 }, svg, title);
    var ys = niceStep(hi - lo, 5);
    for (var g = Math.ceil(lo / ys) * ys; g <= hi + 1e-9; g += ys) {
      el("svg:line", { x1: L, x2: W - R, y1: Y(g), y2: Y(g), "class": Math.abs(g) < 1e-9 ? "zero" : "gridline" }, svg);
      el("svg:text", { x: L - 6, y: Y(g) + 4, "text-anchor": "end" }, svg, +g.toFixed(3));
    }
    var xsStep = Math.max(1, niceStep(x1 - x0, 8));
    for (var e = Math.ceil(x0 / xsStep) * xsStep; e <= x1; e += xsStep) {
      el("svg:text", { x: X(e), y: H - 12, "text-anchor": "middle" }, svg, e);
    }
    el("svg:text", { x: W - R, y: H - 1, "text-anchor": "end" }, svg, "epoch");
    if (mark !== null && mark !== undefined) {
      el("svg:line", { x1: X(mark), x2: X(mark), y1: T, y2: H - B, stroke: "#caa400", "stroke-dasharray": "3 3" }, svg);
    }
    series.forEach(function (s, k) {
      var pts = s.y.map(function (v, i) { return v === null ? null : [X(xs[i]), Y(v)]; });
      var d = pts.filter(Boolean).map(function (p, i) { return (i ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1); }).join("");
      el("svg:path", { d: d, fill: "none", stroke: s.color, "stroke-width": 1.6, "stroke-dasharray": s.dash || null }, svg);
      var lx = L + (k % 2) * 170, ly = 30 + Math.floor(k / 2) * 14;
      el("svg:line", { x1: lx, x2: lx + 16, y1: ly - 4, y2: ly - 4, stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash || null }, svg);
      el("svg:text", { x: lx + 20, y: ly }, svg, s.name);
    });
    return svg;
  }

  function drawCurves(M) {
    var box = document.getElementById("curves"), h = M.history || {};
    if (!box || !h.epoch) return;
    lineChart(box, "loss", h.epoch, [
      { name: "training", y: h.train_loss || [], color: "#555" },
      { name: "validation", y: h.val_loss || [], color: "#e08a00" }], null, M.best_epoch);
    var ccc = [];
    DIMS.forEach(function (d) {
      if (h[d + "_ccc"]) ccc.push({ name: d + " (pooled)", y: h[d + "_ccc"], color: COLOR[d] });
      if (h[d + "_ccc_clip"]) ccc.push({ name: d + " (per clip)", y: h[d + "_ccc_clip"], color: COLOR[d], dash: "5 3" });
    });
    if (ccc.length) lineChart(box, "validation CCC", h.epoch, ccc, [0, 1], M.best_epoch);
  }

  /* ---------------------------------------------------------------------------------------------- clip table */
  var COLUMNS = [
    { key: "clip", label: "clip", text: true }, { key: "seconds", label: "s", d: 1 },
    { key: "valence_ccc", label: "valence CCC" }, { key: "arousal_ccc", label: "arousal CCC" },
    { key: "valence_pcc", label: "valence PCC" }, { key: "arousal_pcc", label: "arousal PCC" },
    { key: "valence_rmse", label: "valence RMSE" }, { key: "arousal_rmse", label: "arousal RMSE" },
    { key: "valence_mae", label: "valence MAE" }, { key: "arousal_mae", label: "arousal MAE" },
    { key: "media", label: "media", text: true }];

  function clipTable(M, open) {
    var box = document.getElementById("cliptable");
    if (!box || !M.clips) return null;
    var state = { key: "clip", asc: true, page: 0, filter: "", openFile: null }, per = M.rows_per_page || 25;
    var tools = el("div", { "class": "tools" }, box);
    var search = el("input", { type: "search", placeholder: "filter clips", "aria-label": "filter clips" }, tools);
    el("span", { "class": "small" }, tools, "click a row to open its viewer; click a heading to sort");
    var table = el("table", { "class": "grid" }, box), thead = el("thead", {}, table), tbody = el("tbody", {}, table);
    var hr = el("tr", {}, thead);
    var pager = el("div", { "class": "pager" }, box);
    var prev = el("button", { type: "button" }, pager, "‹ previous"), info = el("span", {}, pager);
    var next = el("button", { type: "button" }, pager, "next ›");
    COLUMNS.forEach(function (c) {
      var th = el("th", { "data-key": c.key }, hr, c.label);
      th.addEventListener("click", function () {
        state.asc = state.key === c.key ? !state.asc : !!c.text; // numbers: largest first on the first click
        state.key = c.key; state.page = 0; render();
      });
    });
    function rows() {
      var f = state.filter.toLowerCase();
      var list = M.clips.filter(function (r) { return !f || r.clip.toLowerCase().indexOf(f) >= 0; });
      var k = state.key, s = state.asc ? 1 : -1;
      return list.slice().sort(function (a, b) {
        var x = a[k], y = b[k];
        if (x === null || x === undefined) return 1; // no value (constant labels): always last
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * s;
      });
    }
    function render() {
      var list = rows(), pages = Math.max(1, Math.ceil(list.length / per));
      state.page = Math.min(state.page, pages - 1);
      tbody.textContent = "";
      list.slice(state.page * per, (state.page + 1) * per).forEach(function (r) {
        var tr = el("tr", { "data-file": r.file, "class": r.file === state.openFile ? "open" : null }, tbody);
        COLUMNS.forEach(function (c) { el("td", {}, tr, c.text ? String(r[c.key]) : fmt(r[c.key], c.d)); });
        tr.addEventListener("click", function () { open(r.file); });
      });
      Array.prototype.forEach.call(hr.children, function (th) {
        th.className = th.getAttribute("data-key") === state.key ? "sorted" + (state.asc ? " asc" : "") : "";
      });
      info.textContent = "page " + (state.page + 1) + " of " + pages + " (" + list.length + " clips)";
      prev.disabled = state.page === 0; next.disabled = state.page >= pages - 1;
    }
    search.addEventListener("input", function () { state.filter = search.value; state.page = 0; render(); });
    prev.addEventListener("click", function () { state.page--; render(); });
    next.addEventListener("click", function () { state.page++; render(); });
    render();
    return { mark: function (file) { state.openFile = file; render(); } };
  }

  /* ------------------------------------------------------------------------------------------ the clip viewer */
  function Viewer(root, clip, meta) {
    var self = this, fps = clip.fps, T = clip.rows, duration = T / fps;
    root.textContent = "";
    root.hidden = false;
    root.setAttribute("data-clip", clip.name);
    var head = el("div", { "class": "vhead" }, root);
    if (meta && meta.onClose) {
      el("button", { type: "button", "class": "close" }, head, "close").addEventListener("click", meta.onClose);
    }
    el("h3", {}, head, clip.name);
    if (meta && meta.row) {
      var r = meta.row;
      el("div", { "class": "small" }, head, DIMS.map(function (d) {
        return d + " CCC " + (fmt(r[d + "_ccc"]) || "–") + ", RMSE " + (fmt(r[d + "_rmse"]) || "–");
      }).join(" · "));
    }
    var note = el("div", { "class": "note" }, head, clip.note || "");
    var top = el("div", { "class": "vtop" }, root), player = el("div", { "class": "player" }, top);
    var media = null;
    if (clip.media) {
      media = el(clip.media_kind === "audio" ? "audio" : "video",
        { "class": "media", controls: "", preload: "auto", src: clip.media }, player);
      media.muted = true; // nothing plays by itself; the user unmutes (browsers refuse sound without a gesture)
      media.addEventListener("error", function () {
        var msg = "the browser cannot play " + clip.media + " (media error " + (media.error ? media.error.code : "?") + ")";
        note.textContent = msg; note.className = "note warn";
        console.error("mmemo viewer: " + msg);
      });
    } else {
      el("div", { "class": "note warn" }, player, "no media for this clip: click the traces to move through it");
    }
    var plane = this.plane = drawPlane(top, clip.gold !== null);
    var readout = el("div", { "class": "readout" }, root);
    var traceBox = el("div", {}, root);
    var legend = el("div", { "class": "legend" }, root);
    DIMS.forEach(function (d) {
      var i = el("span", {}, legend); el("i", { style: "border-color:" + COLOR[d] }, i); i.appendChild(document.createTextNode(d + " predicted"));
    });
    if (clip.gold) { var g = el("span", {}, legend); el("i", { style: "border-color:" + COLOR.gold + ";border-top-style:dashed" }, g); g.appendChild(document.createTextNode("gold (labels)")); }
    var traces = null, time = 0, raf = 0;

    function drawTraces() {
      var W = Math.max(320, traceBox.clientWidth || root.clientWidth || 900);
      traceBox.textContent = "";
      traces = makeTraces(traceBox, clip, W, duration);
      traces.svg.addEventListener("click", function (ev) {
        var box = traces.svg.getBoundingClientRect(), t = traces.timeAt(ev.clientX - box.left);
        if (media && media.readyState > 0) media.currentTime = t;
        self.setTime(t);
      });
      self.setTime(time);
    }
    this.setTime = function (t) {
      time = Math.max(0, Math.min(duration, t));
      var row = Math.max(0, Math.min(T - 1, Math.floor(time * fps + 1e-6)));
      root.setAttribute("data-time", time.toFixed(4));
      root.setAttribute("data-row", row);
      if (traces) traces.cursor(time);
      plane.show(clip, row, Math.round(TRAIL_S * fps));
      var parts = ["t = " + clock(time), "row " + row];
      DIMS.forEach(function (d) {
        var g = clip.gold ? clip.gold[d][row] : null;
        parts.push("<b class='" + d[0] + "'>" + d + " " + signed(clip.pred[d][row]) + "</b>" + (clip.gold ? " (gold " + signed(g) + ")" : ""));
      });
      readout.innerHTML = parts.join(" · ");
    };
    function follow() { if (media) self.setTime(media.currentTime); raf = media && !media.paused ? requestAnimationFrame(follow) : 0; }
    if (media) {
      ["timeupdate", "seeking", "seeked", "loadedmetadata"].forEach(function (e) {
        media.addEventListener(e, function () { self.setTime(media.currentTime); });
      });
      media.addEventListener("play", function () { if (!raf) raf = requestAnimationFrame(follow); });
    }
    this.media = media;
    this.redraw = drawTraces;
    drawTraces();
  }

  function makeTraces(parent, clip, W, duration) {
    var L = 48, R = 14, PH = 120, GAP = 30, T0 = 10, H = T0 + 2 * PH + GAP + 28;
    var svg = el("svg:svg", { "class": "traces", width: W, height: H, "data-left": L, "data-right": W - R,
      "data-duration": duration, role: "img", "aria-label": "valence and arousal over time" }, parent);
    var X = function (t) { return L + (W - L - R) * t / duration; };
    var xStep = niceStep(duration, Math.max(2, Math.floor((W - L - R) / 80)));
    DIMS.forEach(function (d, k) {
      var top = T0 + k * (PH + GAP), Y = function (v) { return top + PH * (1 - (v + 1) / 2); };
      [-1, -0.5, 0, 0.5, 1].forEach(function (g) {
        el("svg:line", { x1: L, x2: W - R, y1: Y(g), y2: Y(g), "class": g === 0 ? "zero" : "gridline" }, svg);
        if (g % 1 === 0) el("svg:text", { x: L - 6, y: Y(g) + 4, "text-anchor": "end" }, svg, g);
      });
      el("svg:text", { x: L - 36, y: top + PH / 2, transform: "rotate(-90 " + (L - 36) + " " + (top + PH / 2) + ")",
        "text-anchor": "middle", fill: COLOR[d] }, svg, d);
      for (var t = 0; t <= duration + 1e-9; t += xStep) {
        el("svg:line", { x1: X(t), x2: X(t), y1: top, y2: top + PH, "class": "gridline" }, svg);
        if (k === 1) el("svg:text", { x: X(t), y: top + PH + 16, "text-anchor": "middle" }, svg, clock(t));
      }
      var xi = function (i) { return X(i / clip.fps); };
      if (clip.gold) {
        el("svg:path", { "class": "gold " + d, d: pathOf(clip.gold[d], xi, Y, W), fill: "none", stroke: COLOR.gold,
          "stroke-width": 1.3, "stroke-dasharray": "4 2" }, svg);
      }
      el("svg:path", { "class": "pred " + d, d: pathOf(clip.pred[d], xi, Y, W), fill: "none", stroke: COLOR[d], "stroke-width": 1.7 }, svg);
    });
    var line = el("svg:line", { "class": "cursor", x1: L, x2: L, y1: T0 - 4, y2: T0 + 2 * PH + GAP + 4 }, svg);
    return {
      svg: svg,
      timeAt: function (px) { return Math.max(0, Math.min(duration, (px - L) / (W - L - R) * duration)); },
      cursor: function (t) { var x = X(t).toFixed(2); line.setAttribute("x1", x); line.setAttribute("x2", x); }
    };
  }

  function drawPlane(parent, hasGold) {
    var S = 250, M = 30, P = S - 2 * M;
    var svg = el("svg:svg", { "class": "plane", width: S, height: S, "data-left": M, "data-right": S - M,
      "data-top": M, "data-bottom": S - M, role: "img", "aria-label": "valence-arousal plane" }, parent);
    var X = function (v) { return M + P * (v + 1) / 2; }, Y = function (a) { return M + P * (1 - (a + 1) / 2); };
    el("svg:rect", { x: M, y: M, width: P, height: P, fill: "#fbfbfd", stroke: "#c3c7ce" }, svg);
    el("svg:line", { x1: X(0), x2: X(0), y1: M, y2: S - M, "class": "zero" }, svg);
    el("svg:line", { x1: M, x2: S - M, y1: Y(0), y2: Y(0), "class": "zero" }, svg);
    el("svg:text", { x: S / 2, y: S - 6, "text-anchor": "middle", fill: COLOR.valence }, svg, "valence");
    el("svg:text", { x: 10, y: S / 2, transform: "rotate(-90 10 " + S / 2 + ")", "text-anchor": "middle", fill: COLOR.arousal }, svg, "arousal");
    [[-1, "−1"], [1, "+1"]].forEach(function (p) {
      el("svg:text", { x: X(p[0]), y: S - M + 13, "text-anchor": "middle" }, svg, p[1]);
      el("svg:text", { x: M - 4, y: Y(p[0]) + 4, "text-anchor": "end" }, svg, p[1]);
    });
    var trail = el("svg:g", { "class": "trail" }, svg);
    var gold = hasGold ? el("svg:circle", { "class": "gold-point", r: 6, fill: "none", stroke: COLOR.gold, "stroke-width": 1.5 }, svg) : null;
    var point = el("svg:circle", { "class": "point", r: 6, fill: COLOR.point, stroke: "#fff", "stroke-width": 1.5 }, svg);
    return {
      svg: svg,
      show: function (clip, row, n) {
        var v = clip.pred.valence, a = clip.pred.arousal;
        point.setAttribute("cx", X(v[row]).toFixed(2)); point.setAttribute("cy", Y(a[row]).toFixed(2));
        trail.textContent = "";
        var first = Math.max(0, row - n);
        for (var i = first + 1; i <= row; i++) {
          el("svg:line", { x1: X(v[i - 1]).toFixed(1), y1: Y(a[i - 1]).toFixed(1), x2: X(v[i]).toFixed(1), y2: Y(a[i]).toFixed(1),
            stroke: COLOR.point, "stroke-width": 2, "stroke-linecap": "round", "stroke-opacity": ((i - first) / (row - first + 1)).toFixed(2) }, trail);
        }
        if (gold) {
          var gv = clip.gold.valence[row], ga = clip.gold.arousal[row];
          gold.setAttribute("visibility", gv === null || ga === null ? "hidden" : "visible");
          if (gv !== null && ga !== null) { gold.setAttribute("cx", X(gv).toFixed(2)); gold.setAttribute("cy", Y(ga).toFixed(2)); }
        }
      }
    };
  }

  /* ------------------------------------------------------------------------------------------------ the page */
  function reportPage(M) {
    drawCurves(M);
    var viewerBox = document.getElementById("viewer"), byFile = {}, loaded = {}, pending = null, viewer = null;
    var fileOf = {};
    (M.clips || []).forEach(function (r) { byFile[r.file] = r; fileOf[r.clip] = r.file; });
    function show(file, clip) {
      viewer = window.mmemoViewer = new Viewer(viewerBox, clip, { row: byFile[file], onClose: function () {
        viewerBox.hidden = true; viewerBox.textContent = ""; table.mark(null); history.replaceState(null, "", "#");
      } });
      table.mark(file);
    }
    function open(file) {
      if (!byFile[file]) return;
      history.replaceState(null, "", "#clip=" + encodeURIComponent(file));
      viewerBox.hidden = false;
      if (loaded[file]) { show(file, loaded[file]); viewerBox.scrollIntoView({ block: "nearest" }); return; }
      viewerBox.textContent = "loading " + byFile[file].clip + " …";
      pending = file;
      var s = document.createElement("script");
      s.src = "clips/" + file + ".js";
      s.onerror = function () {
        viewerBox.textContent = "could not load " + s.src + " (is the report folder complete?)";
        console.error("mmemo viewer: could not load " + s.src);
      };
      document.body.appendChild(s);
    }
    window.mmemoClipLoaded = function (clip) {
      var file = fileOf[clip.name];
      loaded[file] = clip;
      if (file === pending) { show(file, clip); pending = null; } // a clip opened before it arrived: still loading
    };
    var table = clipTable(M, open);
    window.mmemoOpenClip = open;
    var m = /#clip=([^&]+)/.exec(location.hash);
    if (m && table) open(decodeURIComponent(m[1]));
    var t = 0;
    window.addEventListener("resize", function () { clearTimeout(t); t = setTimeout(function () { if (viewer && !viewerBox.hidden) viewer.redraw(); }, 150); });
  }

  function start() {
    var M = window.MMEMO || {};
    if (M.kind === "clip") {
      var v = window.mmemoViewer = new Viewer(document.getElementById("viewer"), M.clip, null), t = 0;
      window.addEventListener("resize", function () { clearTimeout(t); t = setTimeout(v.redraw, 150); });
    } else {
      reportPage(M);
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
