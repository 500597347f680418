// Progressive enhancement only: every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The dataset form's field editor: add a row by copying the last one, emptied.
  const add = document.getElementById("add-field");
  const body = document.querySelector("#field-editor tbody");
  if (add && body) {
    add.hidden = false;
    add.addEventListener("click", () => {
      const rows = body.querySelectorAll("tr.field-row");
      const copy = rows[rows.length - 1].cloneNode(true);
      const n = rows.length + 1;
      copy.querySelectorAll("input").forEach((el) => { el.value = ""; });
      copy.querySelectorAll("[aria-label]").forEach((el) => {
        el.setAttribute("aria-label", el.getAttribute("aria-label").replace(/\d+$/, String(n)));
      });
      body.appendChild(copy);
      copy.querySelector("input").focus();
    });
  }
});
