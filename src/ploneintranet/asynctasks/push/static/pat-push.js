/* pat-push: live updates from the ploneintranet.asynctasks push server.
 *
 * Opens a websocket to the push server (reconnecting with exponential backoff
 * and jitter). For each "done" message {task, status, snippet_url, target} it
 * fetches the HTML snippet and puts its element with id `target` in place of
 * the page's element with that id, like pat-inject. Elements marked
 * `data-pat-push="<snippet url>"` are placeholders: they are fetched again
 * whenever the socket (re)connects, so a message missed while offline is not lost.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var FIRST_DELAY = 1000;
  var MAX_DELAY = 30000;
  var state = { received: [], delay: FIRST_DELAY, socket: null };
  window.ploneintranetPush = state;

  function socketUrl() {
    var configured = script && script.dataset.pushUrl;
    var url = new URL(configured || "/push", location.href);
    if (!configured) {
      url.port = script ? script.dataset.pushPort : "8765";
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
        if (!replacement || !current || replacement.hasAttribute("data-pat-push")) {
          return false; // still pending
        }
        current.replaceWith(document.importNode(replacement, true));
        return true;
      })
      .catch(function () { return false; });
  }

  function catchUp() {
    document.querySelectorAll("[data-pat-push]").forEach(function (element) {
      inject(element.id, element.getAttribute("data-pat-push"));
    });
  }

  function failed(message) {
    var element = document.getElementById(message.target);
    if (element && element.hasAttribute("data-pat-push")) {
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

  if (window.WebSocket) {
    connect();
  }
})();
