/* The side panel: slide facts, associated images, and collapsing (closed by default on
 * narrow screens, where it would cover most of the slide). */
(function (ns) {
  "use strict";

  var NARROW = "(max-width: 760px)";

  // DICOM attributes worth showing, in order, with their labels.
  var FACTS = [
    ["PatientName", "Patient"],
    ["PatientID", "Patient ID"],
    ["StudyDate", "Study date"],
    ["StudyDescription", "Study"],
    ["StudyID", "Study ID"],
    ["AccessionNumber", "Accession"],
    ["SeriesDescription", "Series"],
    ["ContainerIdentifier", "Slide label"],
    ["Manufacturer", "Scanner"]
  ];

  function dicomDate(value) {
    var m = /^(\d{4})(\d{2})(\d{2})$/.exec(String(value || ""));
    return m ? m[1] + "-" + m[2] + "-" + m[3] : String(value || "");
  }

  function addFact(list, term, value) {
    var dt = document.createElement("dt");
    var dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    list.appendChild(dt);
    list.appendChild(dd);
  }

  function showInfo(slide) {
    var list = document.getElementById("slide-info");
    var attrs = slide.attributes || {};
    addFact(list, "Size", slide.width + " \u00d7 " + slide.height + " px");
    if (slide.mpp) {
      addFact(list, "Pixel spacing", slide.mpp[0].toPrecision(4) + " \u00b5m/px");
    }
    FACTS.forEach(function (fact) {
      var value = attrs[fact[0]];
      if (value) {
        var text = fact[0] === "StudyDate" ? dicomDate(value) : String(value);
        addFact(list, fact[1], text.replace(/\^/g, " "));
      }
    });
    addFact(list, "Path", slide.path || "");
  }

  function associatedFigure(id, name) {
    var figure = document.createElement("figure");
    var link = document.createElement("a");
    var img = document.createElement("img");
    var caption = document.createElement("figcaption");
    var url = ns.signed.url(
      "/slides/" + encodeURIComponent(id) + "/associated/" + encodeURIComponent(name)
    );
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener";
    img.src = url;
    img.alt = name + " image";
    img.loading = "lazy";
    caption.textContent = name;
    link.appendChild(img);
    figure.appendChild(link);
    figure.appendChild(caption);
    return figure;
  }

  function showAssociated(id, names) {
    if (!names || names.length === 0) {
      return;
    }
    var section = document.getElementById("associated");
    var list = section.querySelector(".associated-list");
    names.forEach(function (name) {
      list.appendChild(associatedFigure(id, name));
    });
    section.hidden = false;
  }

  function setOpen(open) {
    var panel = document.getElementById("panel");
    var button = document.getElementById("panel-toggle");
    panel.hidden = !open;
    button.setAttribute("aria-expanded", open ? "true" : "false");
    document.body.classList.toggle("panel-open", open);
  }

  function toggle() {
    setOpen(document.getElementById("panel").hidden);
    // The canvas changed size: OpenSeadragon refits on its next resize check.
    window.dispatchEvent(new Event("resize"));
  }

  function installCollapse() {
    var narrow = window.matchMedia(NARROW);
    setOpen(!narrow.matches);
    narrow.addEventListener("change", function (event) {
      setOpen(!event.matches);
    });
    document.getElementById("panel-toggle").addEventListener("click", toggle);
  }

  ns.panel = {
    dicomDate: dicomDate,
    showInfo: showInfo,
    showAssociated: showAssociated,
    installCollapse: installCollapse,
    toggle: toggle
  };
})((window.TileViewer = window.TileViewer || {}));
