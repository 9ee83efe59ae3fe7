/*! suppilo.js - page views, identify and track in Segment format; no dependencies. */
(function (w, d, SERVER) {
  "use strict";
  var VERSION = "1.0.0";
  var KEY = "suppilo_aid";
  var YEAR = 365 * 24 * 3600;
  var TRAIT_NAMES = {
    email: ["email", "e-mail", "e_mail", "mail"],
    first_name: ["first_name", "firstname", "firstName", "fname", "given_name"],
    last_name: ["last_name", "lastname", "lastName", "lname", "family_name", "surname"],
    phone: ["phone", "tel", "telephone", "mobile", "phone_number"],
    company: ["company", "company_name", "companyName", "organization", "organisation"]
  };

  var existing = w.suppilo;
  if (existing && existing.__suppilo) {
    // A second copy (t.js next to a form's embed.js) only contributes what the server told it.
    existing.__configure(SERVER);
    return;
  }
  var queue = Array.isArray(existing) ? existing.slice() : [];
  var script = d.currentScript;
  var state = {
    ready: false,
    writeKey: SERVER.writeKey || null,
    host: null,
    requireConsent: SERVER.requireConsent !== false,
    siteRequiresConsent: false,
    consented: false,
    autoForms: false,
    pageId: null,
    userId: null
  };

  function uuid() {
    if (w.crypto && w.crypto.randomUUID) {
      return w.crypto.randomUUID();
    }
    var b = new Uint8Array(16);
    w.crypto.getRandomValues(b);
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = "";
    for (var i = 0; i < 16; i++) {
      h += (b[i] + 256).toString(16).slice(1);
      if (i === 3 || i === 5 || i === 7 || i === 9) h += "-";
    }
    return h;
  }

  function readCookie() {
    var parts = d.cookie ? d.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === KEY) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return null;
  }

  function readStorage() {
    try {
      return w.localStorage.getItem(KEY);
    } catch (e) {
      return null;
    }
  }

  function writeId(id) {
    var secure = w.location.protocol === "https:" ? "; Secure" : "";
    d.cookie = KEY + "=" + encodeURIComponent(id) + "; path=/; max-age=" + YEAR + "; SameSite=Lax" + secure;
    try {
      w.localStorage.setItem(KEY, id);
    } catch (e) {
      /* storage disabled: the cookie alone keeps the id */
    }
  }

  function forgetId() {
    d.cookie = KEY + "=; path=/; max-age=0; SameSite=Lax";
    try {
      w.localStorage.removeItem(KEY);
    } catch (e) {
      /* nothing stored */
    }
  }

  // A stored id exists only if it was written after consent (or when no consent is required).
  function storedId() {
    return readCookie() || readStorage();
  }

  function canPersist() {
    return !state.requireConsent || state.consented;
  }

  // The anonymous id: persisted when allowed, otherwise one that lives only as long as this page.
  function anonymousId() {
    var id = storedId();
    if (id) {
      if (!readCookie() || !readStorage()) writeId(id);
      return id;
    }
    if (!state.pageId) state.pageId = uuid();
    if (canPersist()) {
      writeId(state.pageId);
    }
    return state.pageId;
  }

  function hasPersistentId() {
    return !!storedId();
  }

  function campaign() {
    var params = new URLSearchParams(w.location.search);
    var c = {};
    var map = { name: "utm_campaign", source: "utm_source", medium: "utm_medium", term: "utm_term", content: "utm_content" };
    for (var k in map) {
      var v = params.get(map[k]);
      if (v) c[k] = v;
    }
    return c;
  }

  function pageProps() {
    var loc = w.location;
    return {
      url: loc.href,
      path: loc.pathname,
      title: d.title,
      referrer: d.referrer,
      search: loc.search
    };
  }

  function context() {
    var ctx = {
      page: pageProps(),
      locale: (w.navigator.languages && w.navigator.languages[0]) || w.navigator.language,
      userAgent: w.navigator.userAgent,
      library: { name: "suppilo.js", version: VERSION }
    };
    var c = campaign();
    for (var k in c) {
      ctx.campaign = c;
      break;
    }
    if (state.requireConsent && !state.consented && !hasPersistentId()) {
      ctx.consent = { tracking: false, persistentId: false };
    }
    return ctx;
  }

  function send(type, body) {
    if (!state.writeKey || !state.host) return;
    body.type = type;
    body.writeKey = state.writeKey;
    body.messageId = uuid();
    body.timestamp = new Date().toISOString();
    body.anonymousId = anonymousId();
    if (state.userId && !body.userId) body.userId = state.userId;
    body.context = context();
    var payload = JSON.stringify(body);
    var url = state.host + "/v1/" + type;
    try {
      w.fetch(url, {
        method: "POST",
        body: payload,
        headers: { "Content-Type": "text/plain" },
        keepalive: payload.length < 60000,
        credentials: "omit",
        mode: "cors"
      }).catch(function () {});
    } catch (e) {
      if (w.navigator.sendBeacon) w.navigator.sendBeacon(url, payload);
    }
  }

  function page(name, properties) {
    var props = pageProps();
    if (properties) for (var k in properties) props[k] = properties[k];
    var body = { properties: props };
    if (name) body.name = name;
    send("page", body);
  }

  function identify(userId, traits) {
    if (userId && typeof userId === "object") {
      traits = userId;
      userId = null;
    }
    if (userId) state.userId = String(userId);
    var body = { traits: traits || {} };
    if (userId) body.userId = String(userId);
    send("identify", body);
  }

  function track(event, properties) {
    send("track", { event: String(event), properties: properties || {} });
  }

  function fieldValue(form, names) {
    for (var i = 0; i < names.length; i++) {
      var el = form.elements.namedItem(names[i]);
      if (el && el.value && el.type !== "password") return String(el.value).trim();
    }
    return null;
  }

  function traitsOf(form) {
    var traits = {};
    for (var t in TRAIT_NAMES) {
      var v = fieldValue(form, TRAIT_NAMES[t]);
      if (v) traits[t] = v;
    }
    if (!traits.email) {
      var emailInput = form.querySelector('input[type="email"]');
      if (emailInput && emailInput.value) traits.email = emailInput.value.trim();
    }
    return traits;
  }

  function fillAnonymousId(form) {
    var input = form.querySelector('input[name="suppilo_anonymous_id"]');
    if (input && canPersist()) input.value = anonymousId();
  }

  function onSubmit(ev) {
    var form = ev.target;
    if (!form || form.tagName !== "FORM") return;
    fillAnonymousId(form);
    var tagged = form.hasAttribute("data-suppilo-form");
    if (!tagged && !(state.autoForms && form.querySelector('input[type="email"]'))) return;
    // Linking a person to their browsing needs a persistent id, which needs consent where it is required.
    if (!canPersist()) return;
    var traits = traitsOf(form);
    if (traits.email) identify(null, traits);
  }

  function consent(given) {
    if (given) {
      state.consented = true;
      anonymousId();
    } else {
      state.consented = false;
      state.pageId = uuid();
      forgetId();
    }
  }

  function reset() {
    state.userId = null;
    state.pageId = uuid();
    forgetId();
    if (canPersist()) anonymousId();
  }

  function scriptOrigin() {
    try {
      return script && script.src ? new URL(script.src).origin : null;
    } catch (e) {
      return null;
    }
  }

  function init(options) {
    var o = options || {};
    if (state.ready) return;
    state.writeKey = o.writeKey || state.writeKey;
    state.host = String(o.host || scriptOrigin() || SERVER.host || "").replace(/\/+$/, "");
    // The site may ask for consent where the workspace does not, never the other way round.
    state.siteRequiresConsent = o.requireConsent === true;
    state.requireConsent = SERVER.requireConsent !== false || state.siteRequiresConsent;
    state.autoForms = !!o.autoForms;
    state.ready = true;
    if (storedId()) state.consented = true;
    d.addEventListener("submit", onSubmit, true);
    if (o.pageview !== false) page();
    drain();
  }

  // --- embedded suppilo forms (GET /f/<key>/embed.js pushes ["form", config]) ---------------------------

  function el(tag, attrs, text) {
    var node = d.createElement(tag);
    for (var k in attrs || {}) {
      if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) node.setAttribute(k, attrs[k]);
    }
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function renderForm(cfg) {
    var target = cfg.target ? d.querySelector(cfg.target) : null;
    if (!target) {
      target = d.querySelector('[data-suppilo-embed="' + cfg.publicKey + '"]');
    }
    if (!target) {
      if (d.readyState === "loading") {
        d.addEventListener("DOMContentLoaded", function () {
          renderForm(cfg);
        });
      }
      return;
    }
    var form = el("form", { "class": "suppilo-form", novalidate: "novalidate", "data-suppilo-embedded": cfg.publicKey });
    form.appendChild(el("h2", { "class": "suppilo-form-title" }, cfg.name));
    var errors = {};
    function addError(name, container) {
      var err = el("div", { "class": "suppilo-error", role: "alert", id: "suppilo-" + cfg.publicKey + "-" + name + "-error" });
      err.hidden = true;
      container.appendChild(err);
      errors[name] = err;
    }
    cfg.fields.forEach(function (f) {
      var id = "suppilo-" + cfg.publicKey + "-" + f.name;
      if (f.type === "hidden") {
        form.appendChild(el("input", { type: "hidden", name: f.name, value: f["default"] || "" }));
        return;
      }
      var row = el("div", { "class": "suppilo-field" });
      var input;
      if (f.type === "checkbox") {
        input = el("input", { type: "checkbox", id: id, name: f.name, value: "true" });
        var lab = el("label", { "for": id });
        lab.appendChild(input);
        lab.appendChild(d.createTextNode(" " + f.label + (f.required ? " *" : "")));
        row.appendChild(lab);
      } else {
        row.appendChild(el("label", { "for": id }, f.label + (f.required ? " *" : "")));
        if (f.type === "textarea") {
          input = el("textarea", { id: id, name: f.name });
        } else if (f.type === "select") {
          input = el("select", { id: id, name: f.name });
          input.appendChild(el("option", { value: "" }, cfg.texts.choose));
          (f.options || []).forEach(function (opt) {
            input.appendChild(el("option", { value: opt }, opt));
          });
        } else {
          input = el("input", { type: f.type, id: id, name: f.name, autocomplete: f.autocomplete || null });
        }
        if (f.required) input.setAttribute("required", "required");
        row.appendChild(input);
      }
      addError(f.name, row);
      form.appendChild(row);
    });
    if (cfg.consent) {
      var crow = el("div", { "class": "suppilo-field suppilo-consent" });
      var cid = "suppilo-" + cfg.publicKey + "-consent";
      var clab = el("label", { "for": cid });
      clab.appendChild(el("input", { type: "checkbox", id: cid, name: "consent", value: "true" }));
      form.appendChild(el("input", { type: "hidden", name: "consent_version", value: cfg.consent.version || "" }));
      clab.appendChild(d.createTextNode(" " + cfg.consent.text + (cfg.consent.required ? " *" : "")));
      crow.appendChild(clab);
      addError("consent", crow);
      form.appendChild(crow);
    }
    var hp = el("div", { "class": "suppilo-hp", "aria-hidden": "true" });
    // Set through the CSSOM, which a site's Content-Security-Policy allows (a style attribute it may not).
    hp.style.position = "absolute";
    hp.style.left = "-10000px";
    hp.style.width = "1px";
    hp.style.height = "1px";
    hp.style.overflow = "hidden";
    hp.appendChild(el("input", { type: "text", name: cfg.honeypot, tabindex: "-1", autocomplete: "off" }));
    form.appendChild(hp);
    var general = el("div", { "class": "suppilo-error", role: "alert" });
    general.hidden = true;
    form.appendChild(general);
    form.appendChild(el("button", { type: "submit", "class": "suppilo-submit" }, cfg.texts.submit));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var data = {};
      for (var i = 0; i < form.elements.length; i++) {
        var input = form.elements[i];
        if (!input.name) continue;
        if (input.type === "checkbox") data[input.name] = input.checked;
        else data[input.name] = input.value;
      }
      data.page_url = w.location.href;
      if (canPersist()) data.suppilo_anonymous_id = anonymousId();
      for (var k in errors) {
        errors[k].hidden = true;
        errors[k].textContent = "";
      }
      general.hidden = true;
      w.fetch(cfg.action, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(data),
        credentials: "omit",
        mode: "cors"
      })
        .then(function (resp) {
          return resp.json().then(function (json) {
            return { ok: resp.ok, json: json };
          });
        })
        .then(function (r) {
          if (r.ok) {
            if (r.json.redirect_url) {
              w.location.href = r.json.redirect_url;
              return;
            }
            var done = el("div", { "class": "suppilo-success", role: "status" }, r.json.message);
            form.parentNode.replaceChild(done, form);
            return;
          }
          var details = (r.json.error && r.json.error.details) || [];
          var shown = false;
          details.forEach(function (item) {
            var name = String(item.path || "").replace(/^fields\./, "");
            if (errors[name]) {
              errors[name].textContent = item.message;
              errors[name].hidden = false;
              shown = true;
            }
          });
          if (!shown) {
            general.textContent = (r.json.error && r.json.error.message) || cfg.texts.failed;
            general.hidden = false;
          }
        })
        .catch(function () {
          general.textContent = cfg.texts.failed;
          general.hidden = false;
        });
    });
    target.appendChild(form);
  }

  function form(cfg) {
    renderForm(cfg);
  }

  function configure(server) {
    for (var k in server || {}) {
      if (server[k] !== undefined && server[k] !== null) SERVER[k] = server[k];
    }
    state.requireConsent = SERVER.requireConsent !== false || state.siteRequiresConsent;
    if (!state.writeKey && SERVER.writeKey) state.writeKey = SERVER.writeKey;
  }

  var api = {
    __suppilo: true,
    __configure: configure,
    VERSION: VERSION,
    init: init,
    page: page,
    identify: identify,
    track: track,
    consent: consent,
    reset: reset,
    form: form,
    anonymousId: function () {
      return anonymousId();
    },
    push: function (call) {
      var name = call[0];
      var args = Array.prototype.slice.call(call, 1);
      if (typeof api[name] === "function" && name !== "push") {
        if (name !== "init" && name !== "consent" && name !== "form" && !state.ready) {
          queue.push(call);
          return;
        }
        api[name].apply(null, args);
      }
    }
  };
  w.suppilo = api;

  function drain() {
    var calls = queue;
    queue = [];
    // init and consent first, so the queued page views know where to go and whether they may persist an id.
    calls.sort(function (a, b) {
      var rank = { consent: 0, init: 1 };
      var ra = a[0] in rank ? rank[a[0]] : 2;
      var rb = b[0] in rank ? rank[b[0]] : 2;
      return ra - rb;
    });
    for (var i = 0; i < calls.length; i++) api.push(calls[i]);
    if (state.ready && queue.length) drain();
  }
  drain();
  if (script && script.getAttribute("data-write-key") && !state.ready) {
    init({ writeKey: script.getAttribute("data-write-key"), autoForms: script.hasAttribute("data-auto-forms") });
  }
})(window, document, __SUPPILO_CONFIG__);
