// Keyboard labelling on a pair page: a / b / t / s choose and save, n goes to the note, j / k move on.
"use strict";
document.addEventListener("keydown", function (event) {
  const form = document.getElementById("label-form");
  const target = event.target;
  const typing = target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA");
  if (typing) {
    if (event.key === "Escape" || (event.key === "Enter" && target.id === "note")) {
      event.preventDefault();
      target.blur();
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) { return; }
  const choices = { a: "A", b: "B", t: "tie", s: "skip" };
  if (form && choices[event.key]) {
    event.preventDefault();
    const button = document.getElementById("choose-" + choices[event.key].toLowerCase());
    form.requestSubmit(button);
  } else if (form && event.key === "n") {
    event.preventDefault();
    document.getElementById("note").focus();
  } else if (event.key === "j" || event.key === "k") {
    const link = document.getElementById(event.key === "j" ? "next" : "prev");
    if (link) { window.location.href = link.href; }
  }
});
