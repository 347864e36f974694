// Plain constructors for the Grafana (10+, schemaVersion 39) objects the dashboard
// uses: rows, stat, bar gauge, time series and table panels, and their targets. Every
// panel and target queries the `datasource` variable.
local ds = { type: 'prometheus', uid: '${datasource}' };

// Labels a Prometheus table frame carries that say nothing about a node or an image.
local plumbingLabels = ['Time', '__name__', 'job', 'instance', 'container', 'endpoint', 'namespace', 'pod', 'service'];

{
  datasource: ds,

  // [[color, value], ...] -> absolute threshold steps; the first value is null.
  thresholds(steps):: {
    mode: 'absolute',
    steps: [{ color: s[0], value: s[1] } for s in steps],
  },

  // A value mapping: {value: [text, color or null], ...}, indexed in the given order.
  valueMap(texts):: {
    type: 'value',
    options: {
      [std.objectFields(texts)[i]]: { text: texts[std.objectFields(texts)[i]][0], index: i }
                                    + (
                                      local color = texts[std.objectFields(texts)[i]][1];
                                      if color == null then {} else { color: color }
                                    )
      for i in std.range(0, std.length(texts) - 1)
    },
  },

  gridPos(x, y, w, h):: { x: x, y: y, w: w, h: h },

  row(id, title, y):: {
    type: 'row',
    title: title,
    id: id,
    collapsed: false,
    panels: [],
    gridPos: $.gridPos(0, y, 24, 1),
  },

  // An instant query (stats, bar gauges, tables) or, with range=true, a range query
  // (time series).
  target(expr, refId='A', legend='__auto', range=false, table=false):: {
    datasource: ds,
    editorMode: 'code',
    expr: expr,
    refId: refId,
    legendFormat: legend,
    range: range,
    instant: !range,
  } + (if table then { format: 'table' } else {}),

  local panel(type, id, title, description, pos, targets) = {
    type: type,
    title: title,
    description: description,
    id: id,
    gridPos: pos,
    datasource: ds,
    targets: targets,
  },

  local reduceOptions = { calcs: ['lastNotNull'], fields: '', values: false },

  stat(id, title, description, pos, targets, unit='none', steps=[['green', null]], textMode='auto', mappings=[], decimals=null, overrides=[])::
    panel('stat', id, title, description, pos, targets) + {
      fieldConfig: {
        defaults: {
          unit: unit,
          color: { mode: 'thresholds' },
          mappings: mappings,
          thresholds: $.thresholds(steps),
        } + (if decimals == null then {} else { decimals: decimals }),
        overrides: overrides,
      },
      options: {
        reduceOptions: reduceOptions,
        colorMode: 'background',
        graphMode: 'none',
        justifyMode: 'auto',
        orientation: 'auto',
        textMode: textMode,
        showPercentChange: false,
        wideLayout: true,
      },
    },

  bargauge(id, title, description, pos, targets, unit, steps, max=null, displayMode='basic', namePlacement='left', min=0)::
    panel('bargauge', id, title, description, pos, targets) + {
      fieldConfig: {
        defaults: {
          unit: unit,
          min: min,
          decimals: 0,
          color: { mode: 'thresholds' },
          mappings: [],
          thresholds: $.thresholds(steps),
        } + (if max == null then {} else { max: max }),
        overrides: [],
      },
      options: {
        orientation: 'horizontal',
        displayMode: displayMode,
        showUnfilled: true,
        valueMode: 'color',
        namePlacement: namePlacement,
        sizing: 'auto',
        minVizWidth: 8,
        minVizHeight: 16,
        maxVizHeight: 300,
        reduceOptions: reduceOptions,
      },
    },

  timeseries(id, title, description, pos, targets, unit, fillOpacity=0, overrides=[], min=0)::
    panel('timeseries', id, title, description, pos, targets) + {
      fieldConfig: {
        defaults: {
          unit: unit,
          color: { mode: 'palette-classic' },
          mappings: [],
          thresholds: $.thresholds([['green', null]]),
          custom: {
            drawStyle: 'line',
            lineInterpolation: 'linear',
            lineWidth: 1,
            fillOpacity: fillOpacity,
            showPoints: 'never',
            spanNulls: false,
            axisPlacement: 'auto',
            stacking: { mode: 'none', group: 'A' },
          },
        } + (if min == null then {} else { min: min }),
        overrides: overrides,
      },
      options: {
        legend: { displayMode: 'table', placement: 'right', showLegend: true, calcs: ['lastNotNull'] },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },

  // A dashed, wider line for the series of one query (a limit drawn over the data).
  dashedLine(refId):: {
    matcher: { id: 'byFrameRefID', options: refId },
    properties: [
      { id: 'custom.lineStyle', value: { fill: 'dash', dash: [10, 10] } },
      { id: 'custom.lineWidth', value: 2 },
    ],
  },

  // One fixed color for the field (or series) named `name`.
  fixedColor(name, color):: {
    matcher: { id: 'byName', options: name },
    properties: [{ id: 'color', value: { mode: 'fixed', fixedColor: color } }],
  },

  // A table column: the field `field` (e.g. "Value #A") shown as `name`, with further
  // field properties ({id: value}, in order).
  column(field, name, props=[]):: {
    matcher: { id: 'byName', options: field },
    properties: [{ id: 'displayName', value: name }] + [{ id: p[0], value: p[1] } for p in props],
  },

  // A table of instant queries in table format. `columns` orders the labels and value
  // fields shown ([field, ...]); `rename` gives labels their headers; several queries
  // are merged into one row per label set.
  table(id, title, description, pos, targets, columns, rename, overrides, sortBy, sortDesc=false)::
    panel('table', id, title, description, pos, targets) + {
      transformations: (if std.length(targets) > 1 then [{ id: 'merge', options: {} }] else []) + [{
        id: 'organize',
        options: {
          excludeByName: { [l]: true for l in plumbingLabels },
          indexByName: { [columns[i]]: i for i in std.range(0, std.length(columns) - 1) },
          renameByName: rename,
        },
      }],
      fieldConfig: {
        defaults: {
          unit: 'none',
          mappings: [],
          color: { mode: 'thresholds' },
          thresholds: $.thresholds([['green', null]]),
          custom: { align: 'auto', cellOptions: { type: 'auto' }, filterable: true },
        },
        overrides: overrides,
      },
      options: {
        showHeader: true,
        cellHeight: 'sm',
        footer: { show: false, reducer: ['sum'], fields: '', countRows: false },
        sortBy: [{ displayName: sortBy, desc: sortDesc }],
      },
    },
}
