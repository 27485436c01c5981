// shopstream live rankings: polls /api/rankings/* every few seconds. No dependencies.
"use strict";
(function () {
  var params = new URLSearchParams(window.location.search);
  var every = Math.max(1, Math.min(60, Number(params.get("every")) || 3));
  var controls = ["horizon", "gender", "season"];
  var lastMeta = null, fetchedAt = 0, lastError = null, timer = null, seq = 0;

  controls.forEach(function (name) {
    var el = document.getElementById(name), v = params.get(name);
    if (v !== null && Array.prototype.some.call(el.options, function (o) { return o.value === v; })) {
      el.value = v;
    }
    el.addEventListener("change", function () { saveState(); refresh(); });
  });
  document.getElementById("every").textContent = String(every);

  function state() {
    var s = {};
    controls.forEach(function (n) { s[n] = document.getElementById(n).value; });
    return s;
  }

  function saveState() {
    var s = state(), q = new URLSearchParams();
    controls.forEach(function (n) { if (s[n]) q.set(n, s[n]); });
    if (params.get("every")) q.set("every", String(every));
    history.replaceState(null, "", "?" + q.toString());
  }

  function url(dimension, s) {
    var q = new URLSearchParams({ horizon: s.horizon, limit: "10" });
    if (dimension === "products") {
      if (s.gender) q.set("gender", s.gender);
      if (s.season) q.set("season", s.season);
    }
    return "/api/rankings/" + dimension + "?" + q.toString();
  }

  function getJSON(u) {
    return fetch(u, { cache: "no-store" }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) {
          var d = body && body.detail;
          if (Array.isArray(d)) d = d.map(function (x) { return x.msg; }).join("; ");
          throw new Error((d || r.statusText) + " (HTTP " + r.status + ")");
        }
        return body;
      });
    });
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function fmtScore(x) {
    return typeof x === "number" ? x.toLocaleString("en-US", { maximumFractionDigits: 3 }) : String(x);
  }

  function render(dimension, body) {
    var tbody = document.getElementById("rows-" + dimension);
    var rows = [];
    (body.items || []).forEach(function (it) {
      var tr = document.createElement("tr");
      tr.className = "item";
      tr.dataset.id = String(it.id);
      cell(tr, String(it.rank));
      if (dimension === "products") cell(tr, String(it.id), "id");
      cell(tr, it.name === null || it.name === undefined ? String(it.id) : String(it.name), "name");
      cell(tr, fmtScore(it.score), "num");
      rows.push(tr);
    });
    if (!rows.length) {
      var tr = document.createElement("tr"), n = dimension === "products" ? 4 : 3;
      var td = document.createElement("td");
      td.colSpan = n; td.className = "empty"; td.textContent = "no ranking yet for this choice";
      tr.appendChild(td); rows.push(tr);
    }
    tbody.replaceChildren.apply(tbody, rows);
  }

  function fmtTime(iso) {
    if (!iso) return "unknown";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace("Z", " UTC");
  }

  function showStatus() {
    var el = document.getElementById("status");
    var parts = [];
    if (lastMeta) {
      if (lastMeta.current_to) parts.push("current to " + fmtTime(lastMeta.current_to));
      if (typeof lastMeta.age_seconds === "number") {
        var age = Math.round(lastMeta.age_seconds + (Date.now() - fetchedAt) / 1000);
        parts.push("updated " + age + " s ago");
      }
      if (!parts.length) parts.push("no rankings written yet");
    }
    if (lastError) parts.push("refresh failed: " + lastError + " — retrying");
    el.textContent = parts.length ? parts.join(" · ") : "loading…";
    el.className = "status" + (lastError ? " error" : "");
  }

  function refresh() {
    var s = state(), mine = ++seq;
    if (timer) { clearTimeout(timer); timer = null; }
    var f = document.getElementById("product-filters");
    f.textContent = [s.gender, s.season].filter(Boolean).join(" · ");
    return Promise.all(["products", "brands", "subcategories"].map(function (d) {
      return getJSON(url(d, s)).then(function (body) { return [d, body]; });
    })).then(function (results) {
      if (mine !== seq) return;
      results.forEach(function (r) { render(r[0], r[1]); });
      lastMeta = results[0][1].meta || {};
      fetchedAt = Date.now();
      lastError = null;
      document.body.dataset.loaded = "true";
    }).catch(function (err) {
      if (mine !== seq) return;
      lastError = err.message || String(err);
    }).then(function () {
      if (mine !== seq) return;
      showStatus();
      timer = setTimeout(refresh, every * 1000);
    });
  }

  getJSON("/healthz").then(function (h) {
    if (h.warehouse) document.getElementById("report-link").hidden = false;
  }).catch(function () {});
  setInterval(showStatus, 1000);
  refresh();
})();
