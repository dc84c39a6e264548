/* Viewer start-up: read the slide, open the view, wire the panel, ruler, readouts and keys. */
(function (ns) {
  "use strict";

  var body = document.body;

  function installReadouts(view) {
    var viewer = view.viewer;
    if (view.mpp) {
      ns.scalebar.install(viewer, view.mpp);
      ns.cursor.installMagnification(viewer, view.mpp, document.getElementById("magnification"));
    }
    ns.cursor.installPosition(viewer, view.mpp, document.getElementById("cursor-position"));
    return ns.ruler.install(
      viewer,
      view.mpp,
      document.getElementById("ruler"),
      document.getElementById("ruler-length"),
      document.getElementById("ruler-toggle")
    );
  }

  function toggleHelp() {
    var dialog = document.getElementById("help");
    if (dialog.open) {
      dialog.close();
    } else {
      dialog.showModal();
    }
  }

  function installKeys(view, ruler, presets) {
    var viewer = view.viewer;
    document.getElementById("help-toggle").addEventListener("click", toggleHelp);
    ns.keys.install({
      help: toggleHelp,
      ruler: function () {
        ruler.toggle();
      },
      panel: ns.panel.toggle,
      home: function () {
        viewer.viewport.goHome();
      },
      preset: function (i) {
        if (presets[i]) {
          view.zoomToMagnification(presets[i]);
        }
      },
      focal: function (i) {
        view.stepPlane("z", i === 0 ? 1 : -1);
      },
      channel: function (i) {
        view.stepPlane("path", i === 0 ? 1 : -1);
      },
      link: function () {
        document.getElementById("share-copy").click();
      },
      escape: function () {
        var dialog = document.getElementById("help");
        if (dialog.open) {
          dialog.close();
        }
        ruler.toggle(false);
      }
    });
  }

  function build(slide, kind) {
    ns.main.describe(slide);
    ns.panel.showInfo(slide);
    ns.panel.showAssociated(slide.id, slide.associated);
    var view = new ns.View(slide, kind, ns.viewstate.parse(window.location.hash));
    ns.background.apply(slide, view.viewer.element);
    ns.controls.installPlanes(slide, view.plane, view.setPlane.bind(view));
    var presets = ns.controls.installPresets(
      view.viewer, view.mpp, view.zoomToMagnification.bind(view));
    ns.controls.installCopy();
    var ruler = installReadouts(view);
    installKeys(view, ruler, presets);
    window.addEventListener("hashchange", view.followHash.bind(view));
    window.tileView = view;
  }

  function start() {
    var id = ns.main.slideId();
    var kind = ns.main.sourceKind();
    ns.panel.installCollapse();
    if (!id) {
      ns.main.setStatus("No slide id in the address.");
      body.dataset.error = "no slide id";
      return;
    }
    body.dataset.slideId = id;
    ns.main.setStatus("Loading slide\u2026");
    var detail = ns.signed.url("/slides/" + encodeURIComponent(id));
    fetch(detail, { headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (slide) {
        build(slide, kind);
      })
      .catch(function (error) {
        body.dataset.error = String(error.message || error);
        ns.main.setStatus("Could not load slide " + id + ": " + (error.message || error));
      });
  }

  start();
})((window.TileViewer = window.TileViewer || {}));
