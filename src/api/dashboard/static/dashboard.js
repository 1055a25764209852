/* The dashboard (src/api/dashboard/): reads the same stats API the JSON clients use
 * (/api/stats/summary, /timeseries, /breakdown, /realtime). All its state lives in the URL's
 * query string, so a URL is a shareable view: period, month, from, to, interval, tz and the
 * filters (page, referrer_domain, os, browser, device, event_type). See docs/dashboard.md. */
(function () {
  "use strict";
  var CONFIG = window.DASHBOARD;
  var KEY_STORE = "analytics_api_key";
  var FILTERS = ["page", "referrer_domain", "os", "browser", "device", "event_type"];
  var INTERVALS = { hour: "1 hour", day: "1 day", week: "1 week", month: "1 month" };
  var $ = function (id) { return document.getElementById(id); };
  var chart = null;
  var loading = 0;

  // --- state <-> URL ---------------------------------------------------------------------

  function readState() {
    var q = new URLSearchParams(location.search);
    var state = {
      period: q.get("period") || "30d",
      month: q.get("month") || "",
      from: q.get("from") || "",
      to: q.get("to") || "",
      interval: q.get("interval") || "",
      tz: q.get("tz") || CONFIG.default_tz,
      filters: {}
    };
    FILTERS.forEach(function (name) { if (q.get(name) !== null) state.filters[name] = q.get(name); });
    if (!state.interval) state.interval = state.period === "today" ? "hour" : "day";
    return state;
  }

  function writeState(state, replace) {
    var q = new URLSearchParams();
    q.set("period", state.period);
    if (state.period === "month" && state.month) q.set("month", state.month);
    if (state.period === "custom") { q.set("from", state.from); q.set("to", state.to); }
    q.set("interval", state.interval);
    q.set("tz", state.tz);
    FILTERS.forEach(function (name) { if (name in state.filters) q.set(name, state.filters[name]); });
    var url = location.pathname + "?" + q.toString();
    if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
  }

  // --- dates: ranges are whole local days in the chosen zone, sent as naive times ------------

  function today(tz) {
    return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" })
      .format(new Date());
  }
  function addDays(day, n) {
    var d = new Date(day + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }
  function addMonths(month, n) {
    var parts = month.split("-").map(Number);
    var d = new Date(Date.UTC(parts[0], parts[1] - 1 + n, 1));
    return d.toISOString().slice(0, 7);
  }
  function daysBetween(a, b) { return Math.round((new Date(b) - new Date(a)) / 86400000); }

  /* [first day, day after the last] of the period, and of the period before it. */
  function ranges(state) {
    var t = today(state.tz), start, end, prevStart, prevEnd;
    if (state.period === "today") { start = t; end = addDays(t, 1); }
    else if (state.period === "7d") { start = addDays(t, -6); end = addDays(t, 1); }
    else if (state.period === "month") {
      var m = state.month || t.slice(0, 7);
      start = m + "-01"; end = addMonths(m, 1) + "-01";
      prevStart = addMonths(m, -1) + "-01"; prevEnd = start;
    } else if (state.period === "custom" && state.from && state.to) {
      start = state.from; end = addDays(state.to, 1);
    } else { start = addDays(t, -29); end = addDays(t, 1); }
    if (!prevStart) { var n = daysBetween(start, end); prevStart = addDays(start, -n); prevEnd = start; }
    return { start: start, end: end, prevStart: prevStart, prevEnd: prevEnd };
  }

  // --- the API -------------------------------------------------------------------------------

  function ApiError(status, body) { this.status = status; this.body = body; }

  function api(path, params) {
    var q = new URLSearchParams();
    Object.keys(params).forEach(function (k) {
      var v = params[k];
      if (v !== undefined && v !== null && v !== "") q.append(k, v);
    });
    var headers = { Accept: "application/json" };
    var key = storedKey();
    if (key) headers["X-API-Key"] = key;
    return fetch(CONFIG.root + path + "?" + q.toString(), { headers: headers }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) throw new ApiError(r.status, body);
        return body;
      });
    });
  }

  function storedKey() { try { return localStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; } }

  function common(state, start, end) {
    var p = { from: start + "T00:00:00", to: end + "T00:00:00", tz: state.tz, site_id: CONFIG.site_id };
    FILTERS.forEach(function (name) { if (name in state.filters) p[name] = state.filters[name]; });
    return p;
  }

  // --- rendering -----------------------------------------------------------------------------

  function fmt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
  function fmtDuration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    return s >= 60 ? Math.floor(s / 60) + "m " + (s % 60) + "s" : s + "s";
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /* Which top stats the summary has: sessions-based ones only when the API returns them. */
  function topStats(s) {
    // Visits are sessions: the stats API's `visits` once sessions exist, else its `sessions`
    // (events' session_id) when any event carried one; the tracker sends none.
    var visits = s.visits !== undefined ? s.visits : (s.sessions ? s.sessions : undefined);
    var stats = [["visitors", "Unique visitors", s.visitors, fmt]];
    if (visits !== undefined) stats.push(["visits", "Visits", visits, fmt]);
    stats.push(["pageviews", "Pageviews", s.pageviews, fmt]);
    if (visits !== undefined && s.pageviews !== undefined) {
      stats.push(["views_per_visit", "Views per visit", visits ? Math.round(100 * s.pageviews / visits) / 100 : null, fmt]);
    }
    if (s.bounce_rate !== undefined) stats.push(["bounce_rate", "Bounce rate", s.bounce_rate, function (v) { return v === null ? "–" : Math.round(v) + "%"; }]);
    if (s.visit_duration !== undefined) stats.push(["visit_duration", "Visit duration", s.visit_duration, fmtDuration]);
    else if (s.avg_duration !== undefined) stats.push(["avg_duration", "Avg. duration", s.avg_duration, fmtDuration]);
    return stats;
  }

  function renderTop(current, previous) {
    var box = $("top");
    box.textContent = "";
    var before = {};
    topStats(previous).forEach(function (s) { before[s[0]] = s[2]; });
    topStats(current).forEach(function (s) {
      var card = el("div", { "class": "stat", id: "stat-" + s[0] });
      card.appendChild(el("h2", {}, s[1]));
      var value = el("span", { "class": "value", "data-value": s[2] === null || s[2] === undefined ? "" : String(s[2]) }, s[3](s[2]));
      card.appendChild(value);
      var old = before[s[0]];
      var change = el("span", { "class": "change flat" }, "");
      if (old && s[2] !== null && s[2] !== undefined) {
        var pct = Math.round(100 * (s[2] - old) / old);
        change.textContent = (pct > 0 ? "↑ " : pct < 0 ? "↓ " : "") + Math.abs(pct) + "%";
        change.className = "change " + (pct > 0 ? "up" : pct < 0 ? "down" : "flat");
        change.setAttribute("data-change", String(pct));
      } else if (!old && s[2]) {
        change.textContent = "new";
      }
      card.appendChild(change);
      box.appendChild(card);
    });
  }

  function renderChart(state, rows) {
    var xs = [], visitors = [], pageviews = [];
    rows.forEach(function (r) {
      xs.push(Date.parse(r.bucket) / 1000);
      visitors.push(r.visitors || 0);
      pageviews.push(r.pageviews || 0);
    });
    var box = $("chart");
    box.setAttribute("data-points", String(xs.length));
    box.setAttribute("data-visitors", String(visitors.reduce(function (a, b) { return a + b; }, 0)));
    var opts = {
      width: Math.max(box.clientWidth - 4, 300),
      height: 280,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), state.tz); },
      scales: { x: { time: true } },
      series: [
        {},
        { label: "Visitors", stroke: "#4f46e5", fill: "rgba(79,70,229,0.08)", width: 2 },
        { label: "Pageviews", stroke: "#9ca3af", width: 1, dash: [4, 4] }
      ],
      axes: [{}, { size: 50 }]
    };
    if (chart) chart.destroy();
    box.textContent = "";
    chart = new uPlot(opts, [xs, visitors, pageviews], box);
  }

  function renderPanel(section, dimension, rows) {
    section.textContent = "";
    section.appendChild(el("h3", {}, section.getAttribute("data-title")));
    var table = el("table", { "data-dimension": dimension });
    var head = el("tr");
    head.appendChild(el("th", {}, section.getAttribute("data-column")));
    head.appendChild(el("th", { "class": "n" }, "Visitors"));
    head.appendChild(el("th", { "class": "n" }, "Pageviews"));
    table.appendChild(head);
    if (!rows.length) {
      var none = el("tr");
      none.appendChild(el("td", { "class": "empty", colspan: "3" }, "No data"));
      table.appendChild(none);
    }
    var filterable = FILTERS.indexOf(dimension) >= 0;
    rows.forEach(function (r) {
      var value = r[dimension];
      var tr = el("tr", { "class": filterable ? "row" : "", "data-value": value === null ? "" : String(value) });
      tr.appendChild(el("td", { "class": "label" }, value === null || value === "" ? "(none)" : String(value)));
      tr.appendChild(el("td", { "class": "n", "data-metric": "visitors" }, fmt(r.visitors)));
      tr.appendChild(el("td", { "class": "n", "data-metric": "pageviews" }, fmt(r.pageviews)));
      if (filterable && value !== null) {
        tr.addEventListener("click", function () { setFilter(dimension, String(value)); });
      }
      table.appendChild(tr);
    });
    section.appendChild(table);
    section.hidden = false;
  }

  function renderFilters(state) {
    var nav = $("filters");
    nav.textContent = "";
    Object.keys(state.filters).forEach(function (name) {
      var b = el("button", { type: "button", "data-filter": name, title: "remove this filter" },
        name.replace("_", " ") + ": " + state.filters[name] + " ✕");
      b.addEventListener("click", function () { setFilter(name, null); });
      nav.appendChild(b);
    });
  }

  function showError(e) {
    if (e instanceof ApiError && e.status === 401) { askForKey(e); return; }
    var box = $("error");
    var msg = e instanceof ApiError ? (e.body.error || JSON.stringify(e.body.detail || e.body)) : String(e);
    box.textContent = "Could not load the statistics: " + msg;
    box.hidden = false;
  }

  function askForKey(e) {
    $("main").hidden = true;
    $("key-form").hidden = false;
    $("key-error").textContent = storedKey() ? "That key was refused: " + (e.body.error || "unauthorized") : "";
  }

  // --- loading ---------------------------------------------------------------------------------

  function load() {
    var state = readState();
    var r = ranges(state);
    var run = ++loading;
    syncControls(state, r);
    renderFilters(state);
    $("error").hidden = true;
    document.body.setAttribute("data-loaded", "false");
    var base = common(state, r.start, r.end);
    var jobs = [
      api("/api/stats/summary", base),
      api("/api/stats/summary", common(state, r.prevStart, r.prevEnd)),
      api("/api/stats/timeseries", Object.assign({ interval: INTERVALS[state.interval], metrics: "visitors,pageviews", fill: "true" }, base))
    ];
    var panels = Array.prototype.slice.call(document.querySelectorAll(".panel"));
    panels.forEach(function (section) {
      var dimension = section.getAttribute("data-dimension");
      var job = api("/api/stats/breakdown", Object.assign({ dimension: dimension, metrics: "visitors,pageviews", limit: 10 }, base))
        .then(function (body) { return body.rows; }, function (e) {
          // A dimension this server's stats API does not have (sessions, UTM) hides its panel.
          if (section.hasAttribute("data-optional") && e instanceof ApiError && e.status === 422) return null;
          throw e;
        });
      jobs.push(job);
    });
    return Promise.all(jobs).then(function (results) {
      if (run !== loading) return;
      $("main").hidden = false;
      $("key-form").hidden = true;
      renderTop(results[0], results[1]);
      renderChart(state, results[2].rows);
      panels.forEach(function (section, i) {
        var rows = results[3 + i];
        if (rows === null) { section.hidden = true; return; }
        renderPanel(section, section.getAttribute("data-dimension"), rows);
      });
      document.body.setAttribute("data-loaded", "true");
    }).catch(function (e) { if (run === loading) showError(e); });
  }

  function refreshRealtime() {
    return api("/api/stats/realtime", { site_id: CONFIG.site_id }).then(function (body) {
      var b = $("realtime").querySelector("b");
      b.textContent = fmt(body.visitors);
      b.setAttribute("data-value", String(body.visitors));
    }, function () {});
  }

  function setFilter(name, value) {
    var state = readState();
    if (value === null) delete state.filters[name]; else state.filters[name] = value;
    writeState(state);
    load();
  }

  function update(change) {
    var state = readState();
    change(state);
    writeState(state);
    load();
  }

  function syncControls(state, r) {
    $("period").value = state.period;
    $("interval").value = state.interval;
    $("tz").value = state.tz;
    $("month").hidden = state.period !== "month";
    $("month").value = state.month || r.start.slice(0, 7);
    $("custom").hidden = state.period !== "custom";
    $("from").value = r.start;
    $("to").value = addDays(r.end, -1);
  }

  function loadSites() {
    return api("/api/stats/breakdown", { dimension: "site_id", metrics: "events", limit: 100 }).then(function (body) {
      var select = $("site");
      body.rows.forEach(function (row) {
        if (row.site_id === CONFIG.site_id) return;
        select.appendChild(el("option", { value: row.site_id }, row.site_id));
      });
      if (CONFIG.site_id) {
        var own = el("option", { value: CONFIG.site_id }, CONFIG.site_id);
        select.appendChild(own);
        select.value = CONFIG.site_id;
      }
    }, function () {});
  }

  function init() {
    var zones = $("zones");
    var supported = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [];
    ["UTC"].concat(supported).forEach(function (z) { zones.appendChild(el("option", { value: z })); });
    $("period").addEventListener("change", function (e) {
      update(function (s) {
        s.period = e.target.value;
        s.interval = s.period === "today" ? "hour" : (s.interval === "hour" ? "day" : s.interval);
        if (s.period === "custom") { var r = ranges(readState()); s.from = r.start; s.to = addDays(r.end, -1); }
      });
    });
    $("interval").addEventListener("change", function (e) { update(function (s) { s.interval = e.target.value; }); });
    $("month").addEventListener("change", function (e) { update(function (s) { s.month = e.target.value; }); });
    $("from").addEventListener("change", function (e) { update(function (s) { s.from = e.target.value; s.to = s.to || e.target.value; }); });
    $("to").addEventListener("change", function (e) { update(function (s) { s.to = e.target.value; }); });
    $("tz").addEventListener("change", function (e) {
      var zone = e.target.value.trim();
      try { new Intl.DateTimeFormat("en", { timeZone: zone }); } catch (err) { e.target.value = readState().tz; return; }
      update(function (s) { s.tz = zone; });
    });
    $("site").addEventListener("change", function (e) {
      var path = CONFIG.root + "/dashboard" + (e.target.value ? "/" + encodeURIComponent(e.target.value) : "");
      location.href = path + location.search;
    });
    $("key-form").addEventListener("submit", function (e) {
      e.preventDefault();
      try { localStorage.setItem(KEY_STORE, $("key").value.trim()); } catch (err) {}
      start();
    });
    window.addEventListener("popstate", load);
    writeState(readState(), true);
    start();
    setInterval(refreshRealtime, 15000);
  }

  function start() { load(); loadSites(); refreshRealtime(); }

  init();
})();
