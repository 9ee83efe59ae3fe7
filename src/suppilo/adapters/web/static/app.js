// suppilo web interface: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // htmx requests carry the session's CSRF token as a header (forms also carry it as a hidden field).
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  // A select marked data-autosubmit submits its form on change (the button stays for keyboards without JS).
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target && target.matches && target.matches("select[data-autosubmit]") && target.form) {
      if (typeof target.form.requestSubmit === "function") {
        target.form.requestSubmit();
      } else {
        target.form.submit();
      }
    }
  });
  // Pipeline board: dropping a card on a stage submits the card's own move form (the keyboard path is that
  // form itself). A lost stage needs a reason, so the form opens for it instead of submitting.
  document.addEventListener("dragstart", function (event) {
    var card = event.target && event.target.closest ? event.target.closest("[data-deal-id]") : null;
    if (card && event.dataTransfer) {
      event.dataTransfer.setData("text/plain", card.getAttribute("data-deal-id"));
      event.dataTransfer.effectAllowed = "move";
      card.classList.add("dragging");
    }
  });
  document.addEventListener("dragend", function (event) {
    var card = event.target && event.target.closest ? event.target.closest("[data-deal-id]") : null;
    if (card) {
      card.classList.remove("dragging");
    }
  });
  function columnOf(event) {
    return event.target && event.target.closest ? event.target.closest("[data-stage-id]") : null;
  }
  document.addEventListener("dragover", function (event) {
    var column = columnOf(event);
    if (column) {
      event.preventDefault();
      column.classList.add("drop-target");
    }
  });
  document.addEventListener("dragleave", function (event) {
    var column = columnOf(event);
    if (column && !column.contains(event.relatedTarget)) {
      column.classList.remove("drop-target");
    }
  });
  document.addEventListener("drop", function (event) {
    var column = columnOf(event);
    if (!column || !event.dataTransfer) {
      return;
    }
    event.preventDefault();
    column.classList.remove("drop-target");
    var card = document.getElementById("deal-" + event.dataTransfer.getData("text/plain"));
    var form = card ? card.querySelector("form.move-form") : null;
    var select = form ? form.querySelector("select[name=stage_id]") : null;
    var stageId = column.getAttribute("data-stage-id");
    if (!select || select.value === stageId) {
      return;
    }
    select.value = stageId;
    if (column.getAttribute("data-stage-kind") === "lost") {
      var details = card.querySelector("details.move");
      if (details) {
        details.open = true;
      }
      var reason = form.querySelector("input[name=lost_reason]");
      if (reason) {
        reason.focus();
      }
      return;
    }
    if (typeof form.requestSubmit === "function") {
      form.requestSubmit();
    } else {
      form.submit();
    }
  });
})();
