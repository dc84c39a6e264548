/* Keyboard shortcuts, and the help dialog listing them (built from the same table, so the
 * help cannot drift from what the keys do). OpenSeadragon's own keys (arrows and WASD to
 * pan, + and - to zoom, 0 for the whole slide, R to rotate) work when the slide has focus. */
(function (ns) {
  "use strict";

  // [keys as shown, action name, description]; a key is matched by KeyboardEvent.key.
  var SHORTCUTS = [
    [["?"], "help", "Show or hide this help"],
    [["m"], "ruler", "Measure: drag across the slide"],
    [["p"], "panel", "Show or hide the side panel"],
    [["h"], "home", "Whole slide"],
    [["1", "2", "3", "4", "5"], "preset", "Magnification presets (2.5\u00d7, 5\u00d7, 10\u00d7, 20\u00d7, 40\u00d7)"],
    [["z", "Z"], "focal", "Next / previous focal plane"],
    [["c", "C"], "channel", "Next / previous channel"],
    [["l"], "link", "Copy the link to this view"],
    [["Escape"], "escape", "Stop measuring, close dialogs"]
  ];

  var BUILT_IN = [
    ["Arrows, W A S D", "Pan (slide focused)"],
    ["+ / \u2212", "Zoom in / out (slide focused)"],
    ["0", "Whole slide (slide focused)"],
    ["R", "Rotate (slide focused)"]
  ];

  function addRow(list, keys, text) {
    var dt = document.createElement("dt");
    var dd = document.createElement("dd");
    keys.forEach(function (key, i) {
      if (i > 0) {
        dt.appendChild(document.createTextNode(" "));
      }
      var kbd = document.createElement("kbd");
      kbd.textContent = key === "Escape" ? "Esc" : key;
      dt.appendChild(kbd);
    });
    dd.textContent = text;
    list.appendChild(dt);
    list.appendChild(dd);
  }

  function fillHelp(list) {
    SHORTCUTS.forEach(function (row) {
      addRow(list, row[0], row[2]);
    });
    BUILT_IN.forEach(function (row) {
      addRow(list, [row[0]], row[1]);
    });
  }

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || (target && target.isContentEditable);
  }

  function find(key) {
    for (var i = 0; i < SHORTCUTS.length; i += 1) {
      var at = SHORTCUTS[i][0].indexOf(key);
      if (at >= 0) {
        return { action: SHORTCUTS[i][1], index: at };
      }
    }
    return null;
  }

  // actions: {name: function(index)}; index is the key's place in its row (1..5 -> 0..4,
  // z -> 0 (next), Z -> 1 (previous)).
  function install(actions) {
    fillHelp(document.getElementById("help-keys"));
    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) {
        return;
      }
      var hit = find(event.key);
      if (hit && actions[hit.action]) {
        event.preventDefault();
        actions[hit.action](hit.index);
      }
    });
  }

  ns.keys = { install: install, SHORTCUTS: SHORTCUTS };
})((window.TileViewer = window.TileViewer || {}));
