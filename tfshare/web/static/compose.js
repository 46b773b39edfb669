// tfshare compose form: show only the fields of the variant a tag chooses (the grading
// system). Without this script every variant's fields are shown, each under its own legend;
// the server reads only the chosen one's either way.
"use strict";
(function () {
  function sync() {
    document.querySelectorAll("fieldset[data-variant-of]").forEach(function (set) {
      var tag = document.getElementsByName(set.getAttribute("data-variant-of"))[0];
      set.hidden = !!tag && tag.value !== "" && tag.value !== set.getAttribute("data-variant");
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("compose-form");
    if (!form) { return; }
    form.addEventListener("change", sync);
    sync();
  });
})();
