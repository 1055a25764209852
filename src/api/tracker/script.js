/* Event-analytics tracker, served as GET /js/script.js (src/api/tracker/). Paste:
 *   <script defer data-site="example.com" src="https://HOST/js/script.js"></script>
 * Options: data-api (endpoint; default HOST/collect), data-track-localhost, data-track-automation.
 * Opt out in a browser: localStorage.analytics_ignore = "true". No cookies, no identifiers:
 * the service derives the visitor from address and User-Agent. Written small by hand (no
 * build step): tests/tracker prints its gzipped size, which must stay under 2 KB. */
(function (w, d) {
  var s = d.currentScript, l = w.location, n = w.navigator;
  var site = s.getAttribute("data-site") || l.hostname;
  var api = s.getAttribute("data-api") || new URL("/collect", s.src).href;
  var last;

  function off() {
    try { if (w.localStorage.getItem("analytics_ignore") === "true") return 1; } catch (e) {}
    if (/^(localhost|127\.|\[::1\]$)/.test(l.hostname) || l.protocol === "file:") {
      if (!s.hasAttribute("data-track-localhost")) return 1;
    }
    if ((n.webdriver || w._phantom || w.__nightmare || w.Cypress) &&
        !s.hasAttribute("data-track-automation")) return 1;
  }

  function id() {
    return w.crypto && crypto.randomUUID ? crypto.randomUUID() :
      Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function send(type, props) {
    if (off()) return;
    var body = JSON.stringify({
      eventId: id(), timestamp: new Date().toISOString(), eventType: type, siteId: site,
      url: l.href, referrer: d.referrer || null, eventData: props || undefined
    });
    // text/plain: a "simple" request, so no CORS preflight; both survive the page unloading.
    if (!(n.sendBeacon && n.sendBeacon(api, body))) {
      fetch(api, { method: "POST", body: body, keepalive: true, mode: "no-cors",
        credentials: "omit", headers: { "Content-Type": "text/plain" } }).catch(function () {});
    }
  }

  function page() {
    if (last === l.href) return;
    last = l.href;
    send("pageview");
  }

  function analytics(name, props) {
    if (name) send(String(name), props && typeof props === "object" ? props : undefined);
  }

  var queued = (w.analytics && w.analytics.q) || [];
  w.analytics = analytics;
  for (var i = 0; i < queued.length; i++) analytics.apply(w, queued[i]);

  var push = history.pushState;
  history.pushState = function () { push.apply(this, arguments); page(); };
  w.addEventListener("popstate", page);
  w.addEventListener("hashchange", page);

  // Outbound links and file downloads, as custom events (capture: before a handler navigates).
  var files = /\.(pdf|zip|gz|tgz|rar|7z|dmg|exe|msi|pkg|deb|rpm|apk|csv|xlsx?|docx?|pptx?|txt|mp3|mp4|mov|avi|wav|epub|iso)$/i;
  d.addEventListener("click", function (e) {
    var a = e.target && e.target.closest && e.target.closest("a[href]");
    if (!a) return;
    var u = new URL(a.href, l.href);
    if (!/^https?:$/.test(u.protocol)) return;
    if (files.test(u.pathname)) send("file_download", { url: u.href });
    else if (u.host !== l.host) send("outbound_link", { url: u.href });
  }, true);

  if (d.visibilityState === "prerender") {
    d.addEventListener("visibilitychange", function v() {
      if (d.visibilityState !== "prerender") { d.removeEventListener("visibilitychange", v); page(); }
    });
  } else page();
})(window, document);
