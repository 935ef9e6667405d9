/* Tether live updates: keep a server-rendered page current without reloading it.
 *
 * The page says which event it reflects (<body data-live-seq>) and which event types concern it
 * (data-live-types, comma list, prefixes like "assignment." allowed). This script subscribes to
 * ws://HOST/assignments/events?since=<seq> — so every change committed after the page was rendered
 * is replayed, none missed — and when a relevant event arrives it fetches the same URL again and
 * swaps the page's live regions ([data-live][id]) in place. Rows that are new or changed flash.
 * Without JavaScript the page is the same, only static. Ages (<time class="age">) tick every second.
 */
(function () {
  "use strict";
  var body = document.body;
  if (!body || body.dataset.liveSeq === undefined) return;

  var lastSeq = parseInt(body.dataset.liveSeq, 10) || 0;
  var types = body.dataset.liveTypes || "";
  var paused = body.hasAttribute("data-live-paused");
  var serverNow = Date.parse(body.dataset.serverNow || "");
  var clockSkew = isNaN(serverNow) ? 0 : serverNow - Date.now(); // server time = client time + skew
  var indicator = document.getElementById("live-state");

  // --- Ages ---------------------------------------------------------------------------------------
  function ageText(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + "s";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + "m " + (s < 10 ? "0" : "") + s + "s";
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 24) return h + "h " + (m < 10 ? "0" : "") + m + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }
  function tick() {
    var now = Date.now() + clockSkew;
    var nodes = document.querySelectorAll("time.age[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var t = Date.parse(nodes[i].getAttribute("datetime"));
      if (!isNaN(t)) {
        var text = ageText((now - t) / 1000);
        if (nodes[i].textContent !== text) nodes[i].textContent = text;
      }
    }
  }
  setInterval(tick, 1000);

  // --- Re-rendering the live regions ------------------------------------------------------------
  // One re-render in flight at a time, at most one every MIN_GAP ms: a burst of events costs a page a
  // few renders a second, not one per event, and a change still shows well within a second.
  var inflight = false, again = false, lastRefresh = 0, MIN_GAP = 400;

  function rowRevisions(root) {
    var revs = {};
    var rows = root.querySelectorAll("[data-key]");
    for (var i = 0; i < rows.length; i++) revs[rows[i].dataset.key] = rows[i].dataset.rev || "";
    return revs;
  }

  function swap(fresh) {
    var regions = document.querySelectorAll("[data-live][id]");
    for (var i = 0; i < regions.length; i++) {
      var old = regions[i], next = fresh.getElementById(old.id);
      if (!next || old.innerHTML === next.innerHTML) continue;
      var before = rowRevisions(old);
      old.innerHTML = next.innerHTML;
      var rows = old.querySelectorAll("[data-key]");
      for (var j = 0; j < rows.length; j++) {
        var key = rows[j].dataset.key;
        if (!(key in before) || before[key] !== (rows[j].dataset.rev || "")) rows[j].classList.add("flash");
      }
    }
    tick();
  }

  function refresh() {
    if (paused) return;
    if (inflight) { again = true; return; }
    var wait = lastRefresh + MIN_GAP - Date.now();
    if (wait > 0) { inflight = true; setTimeout(function () { inflight = false; refresh(); }, wait); return; }
    inflight = true; again = false; lastRefresh = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Tether-Live": "1" } })
      .then(function (r) {
        if (r.redirected || !r.ok) throw new Error("page answered " + r.status);
        return r.text();
      })
      .then(function (html) { swap(new DOMParser().parseFromString(html, "text/html")); })
      .catch(function (err) { if (window.console) console.warn("tether-live:", err); })
      .then(function () { inflight = false; if (again) refresh(); });
  }

  // --- The event stream -------------------------------------------------------------------------
  var socket = null, backoff = 500, connected = false;

  function setState(state) { if (indicator) indicator.dataset.state = state; body.dataset.liveState = state; }

  function relevant(event) {
    if (!types) return true;
    var list = types.split(",");
    for (var i = 0; i < list.length; i++) {
      var t = list[i];
      if (!t) continue;
      if (t.charAt(t.length - 1) === "." ? event.type.indexOf(t) === 0 : event.type === t) return true;
    }
    return false;
  }

  function onEvents(events) {
    var changed = false;
    for (var i = 0; i < events.length; i++) {
      var e = events[i];
      if (!e || typeof e.seq !== "number") continue;
      if (e.seq <= lastSeq) continue; // already reflected (duplicate at a reconnect seam)
      lastSeq = e.seq;
      if (typeof e.type === "string" && relevant(e)) changed = true;
    }
    if (changed) refresh();
  }

  function connect() {
    var proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    var url = proto + "//" + window.location.host + "/assignments/events?since=" + lastSeq;
    if (types) url += "&types=" + encodeURIComponent(types);
    setState("connecting");
    try { socket = new WebSocket(url); } catch (err) { scheduleReconnect(); return; }
    socket.onopen = function () { connected = true; backoff = 500; setState("on"); };
    socket.onmessage = function (message) {
      var data;
      try { data = JSON.parse(message.data); } catch (err) { return; }
      if (Array.isArray(data)) onEvents(data);
      else if (data && Array.isArray(data.events)) onEvents(data.events);
      else if (data && typeof data.seq === "number") onEvents([data]);
      // Anything else (e.g. a "resync" notice) is followed by a close: we reconnect from lastSeq.
    };
    socket.onclose = function () {
      var wasConnected = connected;
      connected = false; socket = null; setState("off");
      // While we were away the page may have missed changes the replay cannot show (a heartbeat):
      if (wasConnected) refresh();
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
  }

  // Heartbeats emit no event: refresh now and then so health and load stay current, and more
  // often while the stream is down.
  setInterval(function () { if (!document.hidden) refresh(); }, 30000);
  setInterval(function () { if (!connected && !document.hidden) refresh(); }, 5000);

  window.tetherLive = { refresh: refresh, lastSeq: function () { return lastSeq; } };
  connect();
})();
