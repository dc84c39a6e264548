/* Landing-page search: what a slide can be found by, and the filter. Pure functions. */
(function (ns) {
  "use strict";

  // Attributes searched besides name and path (patient ones only when the server shares them).
  var SEARCHED = [
    "StudyDescription", "StudyID", "AccessionNumber", "PatientName", "PatientID",
    "SeriesDescription", "ContainerIdentifier"
  ];

  function isoDate(dicom) {
    var m = /^(\d{4})(\d{2})(\d{2})/.exec(String(dicom || ""));
    return m ? m[1] + "-" + m[2] + "-" + m[3] : "";
  }

  // One lower-case string per slide: what a query is matched against.
  function haystack(entry, attributes) {
    var attrs = attributes || {};
    var parts = [entry.name, entry.path, entry.id, isoDate(attrs.StudyDate)];
    SEARCHED.forEach(function (key) {
      if (attrs[key]) {
        parts.push(String(attrs[key]).replace(/\^/g, " "));
      }
    });
    return parts.filter(Boolean).join(" \u2022 ").toLowerCase();
  }

  // Every word of the query must appear; dates compare as ISO strings (YYYY-MM-DD).
  function matches(item, query, from, to) {
    var words = String(query || "").toLowerCase().split(/\s+/).filter(Boolean);
    var all = words.every(function (word) {
      return item.text.indexOf(word) >= 0;
    });
    if (!all) {
      return false;
    }
    if ((from || to) && !item.date) {
      return false;
    }
    return (!from || item.date >= from) && (!to || item.date <= to);
  }

  ns.search = { haystack: haystack, matches: matches, isoDate: isoDate };
})((window.TileViewer = window.TileViewer || {}));
