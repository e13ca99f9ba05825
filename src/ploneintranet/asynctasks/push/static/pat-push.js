/* pat-push: live updates from the ploneintranet.asynctasks push server, as a
 * Patternslib pattern.
 *
 * Plone's resource registry loads this file (the bundle
 * "ploneintranet-asynctasks-push", for logged-in users, after Plone's own
 * bundle). It registers the pattern "push" in the page's Patternslib registry,
 * window.__patternslib_registry, which Plone 6's bundle shares with the
 * bundles of add-ons: Patternslib then initialises it on each element with
 * class "pat-push", in the page and in whatever pat-inject or another pattern
 * inserts later. No build step: there is nothing to import, so the pattern is
 * a plain object with a trigger and init, as the registry expects.
 *
 * <div id="x" class="pat-push" data-pat-push="<snippet url>"> is a placeholder:
 * when a "done" message {task, status, snippet_url, target} for id "x" arrives,
 * the snippet is fetched and its element "x" replaces the placeholder, like
 * pat-inject. A placeholder is fetched again when it is initialised while the
 * socket is open (a message may have come before it was on the page) and
 * whenever the socket (re)connects (a message may have come while offline).
 *
 * The page has one websocket to the push server, opened if the page names it
 * (<meta name="ploneintranet-push">, rendered for logged-in users), and
 * reconnected with exponential backoff and jitter. Without Patternslib on the
 * page the placeholders are initialised once the page has loaded.
 */
(function () {
  "use strict";
  if (window.ploneintranetPush) {
    return; // loaded twice (the bundle and a not yet upgraded site's viewlet)
  }
  var FIRST_DELAY = 1000;
  var MAX_DELAY = 30000;
  var TRIGGER = ".pat-push";
  var config = document.querySelector('meta[name="ploneintranet-push"]');
  var initialised = new WeakSet();
  // received: every message; bound: ids of the placeholders initialised, in order
  var state = { received: [], bound: [], delay: FIRST_DELAY, socket: null };
  window.ploneintranetPush = state;

  function socketOpen() {
    return state.socket !== null && state.socket.readyState === WebSocket.OPEN;
  }

  function socketUrl() {
    var configured = config.dataset.pushUrl;
    var url = new URL(configured || "/push", location.href);
    if (!configured) {
      url.port = config.dataset.pushPort;
    }
    url.protocol = url.protocol === "https:" || url.protocol === "wss:" ? "wss:" : "ws:";
    return url.href;
  }

  function sameOrigin(url) {
    try {
      return new URL(url, location.href).origin === location.origin;
    } catch (error) {
      return false;
    }
  }

  function inject(target, snippetUrl) {
    var element = target && document.getElementById(target);
    // only snippets of this site: a message never makes the page load elsewhere
    if (!element || !sameOrigin(snippetUrl)) {
      return Promise.resolve(false);
    }
    return fetch(snippetUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : ""; })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var replacement = doc.getElementById(target);
        var current = document.getElementById(target);
        if (!replacement || !current || replacement.classList.contains("pat-push")) {
          return false; // still pending
        }
        current.replaceWith(document.importNode(replacement, true));
        return true;
      })
      .catch(function () { return false; });
  }

  function refresh(element) {
    return inject(element.id, element.getAttribute("data-pat-push"));
  }

  function bind(element) {
    if (initialised.has(element)) {
      return;
    }
    initialised.add(element);
    state.bound.push(element.id);
    if (socketOpen()) {
      refresh(element);
    }
  }

  function catchUp() {
    document.querySelectorAll(TRIGGER).forEach(refresh);
  }

  function failed(message) {
    var element = document.getElementById(message.target);
    if (element && element.classList.contains("pat-push")) {
      element.classList.add("failed");
      element.textContent = "The preview could not be made.";
    }
  }

  function onMessage(event) {
    var message;
    try {
      message = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    state.received.push(message);
    if (message.status === "done") {
      inject(message.target, message.snippet_url);
    } else if (message.status === "failed") {
      failed(message);
    }
    document.dispatchEvent(new CustomEvent("pat-push:message", { detail: message }));
  }

  function connect() {
    var socket = new WebSocket(socketUrl());
    state.socket = socket;
    socket.onopen = function () {
      state.delay = FIRST_DELAY;
      document.body.setAttribute("data-push-state", "open");
      catchUp();
    };
    socket.onmessage = onMessage;
    socket.onclose = function () {
      document.body.setAttribute("data-push-state", "closed");
      var delay = state.delay;
      state.delay = Math.min(delay * 2, MAX_DELAY);
      setTimeout(connect, delay + Math.random() * delay / 2);
    };
  }

  function scan(root) {
    if (root.matches && root.matches(TRIGGER)) {
      bind(root);
    }
    root.querySelectorAll(TRIGGER).forEach(bind);
  }

  var pattern = {
    name: "push",
    trigger: TRIGGER,
    // Patternslib calls init with a jQuery object of the element.
    init: function ($el) {
      ($el && $el.jquery ? $el.get() : [$el]).forEach(bind);
      return $el;
    },
  };

  var registry = (window.__patternslib_registry = window.__patternslib_registry || {});
  if (!registry.push) {
    registry.push = pattern;
  }
  if (window.__patternslib_registry_initialized) {
    scan(document.body); // Patternslib made its first scan before we were here
  }
  window.addEventListener("load", function () {
    if (!window.__patternslib_registry_initialized) {
      scan(document.body); // no Patternslib on this page
    }
  });

  if (config && window.WebSocket) {
    connect();
  }
})();
