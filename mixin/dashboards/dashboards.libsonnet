// The Grafana dashboard "Image cap (nodeStatusMaxImages)": nodes whose status.images is
// capped, wanted images that are missing or hidden by the cap, the sources of wanted
// images, and the exporter's health.
//
// Every query is filtered by the job, cluster and (for node series) node variables,
// all of which default to "All". Panel ids are fixed: links to a panel (viewPanel=N)
// keep working when panels are added.
local text = import '../lib/text.libsonnet';
local p = import 'panels.libsonnet';

{
  grafanaDashboards+:: {
    local c = $._config,
    local cl = c.clusterLabel,

    // The template-variable filter of a metric: by job and cluster, and by node for
    // node series; `extra` matchers are appended.
    local f(node=true, extra=[]) =
      '{' + std.join(', ', ['job=~"$job"', '%s=~"$cluster"' % cl]
                           + (if node then ['node=~"$node"'] else [])
                           + extra) + '}',
    local fn = f(),  // node series
    local fc = f(node=false),  // exporter, image and source series

    local pos = p.gridPos,
    local t = p.target,
    local tt(expr, refId) = p.target(expr, refId, table=true),
    local count(field, name) = p.column(field, name, [['unit', 'none'], ['decimals', 0]]),
    local capSteps = [['green', null], ['orange', c.nearCapRatio], ['red', 1]],
    local coverageSteps = [['red', null], ['green', 1]],
    local coverage(expr) = 'imagecap_prepull_image_nodes%s / (imagecap_prepull_image_eligible_nodes%s > 0)%s' % [fc, fc, expr],
    // An image's per-image numbers, once per source that wants it.
    local perSource(expr) = expr + ' + ignoring (source) group_right 0 * imagecap_wanted_image_info' + fc,

    local variable(name, label, query) = {
      type: 'query',
      name: name,
      label: label,
      datasource: p.datasource,
      definition: query,
      query: { query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery' },
      refresh: 2,
      regex: '',
      sort: 1,
      includeAll: true,
      multi: true,
      allValue: '.*',
      current: { selected: true, text: ['All'], value: ['$__all'] },
      hide: 0,
      options: [],
      skipUrlSync: false,
    },

    'imagecap.json': {
      annotations: {
        list: [{
          builtIn: 1,
          datasource: { type: 'grafana', uid: '-- Grafana --' },
          enable: true,
          hide: true,
          iconColor: 'rgba(0, 211, 255, 1)',
          name: 'Annotations & Alerts',
          type: 'dashboard',
        }],
      },
      description: 'Kubelet nodeStatusMaxImages: nodes whose status.images is capped, and wanted images that are missing or hidden by the cap (imagecap-exporter).',
      editable: true,
      fiscalYearStartMonth: 0,
      graphTooltip: 1,
      id: null,
      links: [],
      liveNow: false,
      refresh: c.dashboardRefresh,
      schemaVersion: 39,
      tags: c.dashboardTags,
      time: { from: c.dashboardFrom, to: 'now' },
      timepicker: {},
      timezone: c.dashboardTimezone,
      title: c.dashboardTitle,
      uid: c.dashboardUID,
      version: 1,
      weekStart: '',

      templating: {
        list: [
          {
            type: 'datasource',
            name: 'datasource',
            label: 'Data source',
            query: 'prometheus',
            current: {},
            hide: 0,
            includeAll: false,
            multi: false,
            options: [],
            refresh: 1,
            regex: '',
            skipUrlSync: false,
          },
          variable('job', 'Job', 'label_values(imagecap_build_info, job)'),
          variable('cluster', 'Cluster', 'label_values(imagecap_build_info, %s)' % cl),
          variable('node', 'Node', 'label_values(imagecap_node_images{job=~"$job", %s=~"$cluster"}, node)' % cl),
        ],
      },

      panels: [
        // ------------------------------------------------------------------ Overview
        p.row(1, 'Overview', 0),
        p.stat(
          2,
          'Nodes at cap',
          "Nodes whose status.images holds as many entries as their kubelet's nodeStatusMaxImages (default 50): images beyond the cap are hidden, so prepullers re-pull and spawner menus miss images. Fix: set the kubelet configuration field nodeStatusMaxImages to -1 (no cap) or to about ephemeral storage in GB / 3, then restart the kubelet.",
          pos(0, 1, 4, 4),
          [t('sum(imagecap_node_at_cap%s)' % fn, legend='at cap')],
          steps=[['green', null], ['red', 1]],
        ),
        p.stat(
          3,
          'Nodes near cap',
          'Nodes at %s or more of their image cap but not at it yet. Nodes without a cap (unlimited) are not counted.'
          % text.percent(c.nearCapRatio),
          pos(4, 1, 4, 4),
          [t('sum((imagecap_node_images_cap_ratio%s >= bool %s) * (imagecap_node_at_cap%s == bool 0) * (imagecap_node_max_images%s > bool 0))'
             % [fn, text.number(c.nearCapRatio), fn, fn], legend='near cap')],
          steps=[['green', null], ['orange', 1]],
        ),
        p.stat(
          4,
          'Wanted images missing',
          '(eligible node, wanted image) pairs the node does not report. absent: the image really is not there (the node is under its cap, or at it and the image is larger than the smallest one it lists, or its agent says so). unlistable: the node is at its cap and the image is smaller than every image it lists, so it can never be listed there. hidden: at the cap, and its runtime holds it. unverifiable: at the cap, and nothing says which.',
          pos(8, 1, 6, 4),
          [t('sum by (state) (imagecap_node_prepull_missing_images%s)' % fn, legend='{{state}}')],
          steps=[['green', null], ['red', 1]],
          textMode='value_and_name',
        ),
        p.stat(
          5,
          'Nodes known',
          'Nodes the exporter knows about.',
          pos(14, 1, 3, 4),
          [t('sum(imagecap_nodes%s)' % fc, legend='nodes')],
          steps=[['blue', null]],
        ),
        p.stat(
          6,
          'Eligible nodes',
          'Nodes eligible for at least one wanted image (not cordoned, and matching where some source wants its images).',
          pos(17, 1, 3, 4),
          [t('sum(imagecap_prepull_eligible_nodes%s)' % fc, legend='eligible')],
          steps=[['blue', null]],
        ),
        p.stat(
          7,
          'Exporter data age',
          'Seconds since node data was last refreshed successfully (the stalest exporter shown).',
          pos(20, 1, 4, 4),
          [t('max(time() - imagecap_last_update_timestamp_seconds%s)' % fc, legend='age')],
          unit='s',
          steps=[['green', null], ['orange', 300], ['red', 900]],
          decimals=0,
        ),

        // ---------------------------------------------------- Images reported vs cap
        p.row(8, 'Images reported vs cap', 5),
        p.bargauge(
          9,
          'Images reported / cap per node',
          "Entries in status.images divided by the node's cap, highest first. 100% means the node is at its cap and hides images. Nodes without a cap show 0%.",
          pos(0, 6, 10, 10),
          [t('sort_desc(imagecap_node_images_cap_ratio%s)' % fn, legend='{{node}}')],
          'percentunit',
          capSteps,
          max=1,
          displayMode='gradient',
        ),
        p.timeseries(
          10,
          'Images reported and cap',
          'Entries in status.images per node (solid) and the cap in force (dashed). Unlimited nodes draw no cap line.',
          pos(10, 6, 14, 10),
          [
            t('imagecap_node_images%s' % fn, 'A', '{{node}} images', range=true),
            t('imagecap_node_max_images%s > 0' % fn, 'B', '{{node}} cap', range=true),
          ],
          'short',
          overrides=[p.dashedLine('B')],
        ),

        // --------------------------------------------------------------------- Nodes
        p.row(11, 'Nodes', 16),
        p.table(
          12,
          'Nodes',
          'One row per node. Cap -1 is shown as unlimited. Recommended cap is ephemeral storage capacity in GB / 3, rounded up. Missing wanted images counts them in every state (absent, unlistable, hidden, unverifiable).',
          pos(0, 17, 24, 9),
          [
            tt('max without () (imagecap_node_images%s)' % fn, 'A'),
            tt('max without () (imagecap_node_max_images%s)' % fn, 'B'),
            tt('max without () (imagecap_node_images_cap_ratio%s)' % fn, 'C'),
            tt('max without () (imagecap_node_image_size_bytes%s)' % fn, 'D'),
            tt('max without () (imagecap_node_ephemeral_storage_capacity_bytes%s)' % fn, 'E'),
            tt('max without () (imagecap_node_ephemeral_storage_allocatable_bytes%s)' % fn, 'F'),
            tt('max without () (imagecap_node_recommended_max_images%s)' % fn, 'G'),
            tt('sum without (state) (imagecap_node_prepull_missing_images%s)' % fn, 'H'),
          ],
          [cl, 'node'] + ['Value #' + r for r in std.stringChars('ABCDEFGH')],
          { node: 'Node', [cl]: 'Cluster' },
          [
            count('Value #A', 'Images'),
            p.column('Value #B', 'Cap', [['unit', 'none'], ['decimals', 0], ['mappings', [p.valueMap({ '-1': ['unlimited', null] })]]]),
            p.column('Value #C', 'Images / cap', [
              ['unit', 'percentunit'],
              ['decimals', 0],
              ['thresholds', p.thresholds(capSteps)],
              ['custom.cellOptions', { type: 'color-background', mode: 'basic' }],
            ]),
            p.column('Value #D', 'Image bytes', [['unit', 'bytes']]),
            p.column('Value #E', 'Ephemeral capacity', [['unit', 'bytes']]),
            p.column('Value #F', 'Ephemeral allocatable', [['unit', 'bytes']]),
            count('Value #G', 'Recommended cap'),
            p.column('Value #H', 'Missing wanted images', [
              ['unit', 'none'],
              ['decimals', 0],
              ['thresholds', p.thresholds([['green', null], ['red', 1]])],
              ['custom.cellOptions', { type: 'color-text' }],
            ]),
          ],
          'Images / cap',
          sortDesc=true,
        ),

        // ------------------------------------------------------------- Wanted images
        p.row(13, 'Wanted images', 26),
        p.bargauge(
          14,
          'Eligible nodes reporting each wanted image',
          'For each wanted image, the fraction of the nodes eligible for it that report it, lowest first. Below 100% some eligible node lacks it or hides it behind its cap. Images no node is eligible for are left out.',
          pos(0, 27, 8, 9),
          [t('sort(%s)' % coverage(''), legend='{{image}}')],
          'percentunit',
          coverageSteps,
          max=1,
          namePlacement='top',
        ),
        p.table(
          15,
          'Wanted images',
          'For each wanted image: the nodes eligible for it that report it, out of the nodes eligible for it (each source decides where its images are wanted).',
          pos(8, 27, 9, 9),
          [
            tt('max without () (imagecap_prepull_image_nodes%s)' % fc, 'A'),
            tt('max without () (imagecap_prepull_image_eligible_nodes%s)' % fc, 'B'),
            tt(coverage(''), 'C'),
          ],
          [cl, 'image', 'Value #A', 'Value #B', 'Value #C'],
          { image: 'Image', [cl]: 'Cluster' },
          [
            count('Value #A', 'Nodes with image'),
            count('Value #B', 'Eligible nodes'),
            p.column('Value #C', 'Coverage', [
              ['unit', 'percentunit'],
              ['decimals', 0],
              ['thresholds', p.thresholds(coverageSteps)],
              ['custom.cellOptions', { type: 'color-text' }],
            ]),
          ],
          'Coverage',
        ),
        p.table(
          16,
          'Wanted images missing per node',
          'Each (eligible node, wanted image) pair the node does not report, and why. absent: the image is not on the node (the node is under its cap; or at it, and the image is larger than the smallest one it lists, or its node agent says the runtime lacks it). unlistable: the node is at its cap and the image is smaller than every image it lists, so it can never be listed there, pulled or not. hidden: the node is at its cap and its runtime holds the image: the API hides it. Unlistable and hidden images the prepuller pulls again and the spawner menu leaves out. unverifiable: the node is at its cap and neither sizes nor a node agent report say which.',
          pos(17, 27, 7, 9),
          [tt('imagecap_node_prepull_image_missing%s' % [fn], 'A')],
          [cl, 'node', 'image', 'state'],
          { node: 'Node', image: 'Image', state: 'State', [cl]: 'Cluster' },
          [
            p.column('state', 'State', [
              ['mappings', [p.valueMap({ absent: ['absent', 'red'], hidden: ['hidden by the cap', 'red'], unlistable: ['unlistable at the cap', 'red'], unverifiable: ['unverifiable (at cap)', 'orange'] })]],
              ['custom.cellOptions', { type: 'color-text' }],
            ]),
          ],
          'Node',
        ),

        // -------------------------------------------------------------- Spawner menu
        // Needs a Nublado source: its images by where they stand with its spawner
        // menu. Without one these panels are empty (the series are absent, not 0).
        p.row(35, 'Spawner menu', 36),
        p.stat(
          36,
          'Spawner menu images',
          'Images Nublado prepulls, by where they stand with its spawner menu, which offers only images every eligible node lists. shown: in the menu. hidden_by_cap: every node missing it is at its cap and holds it hidden or can never list it (smaller than every image the node lists): out of the menu as long as the cap holds. maybe_hidden_by_cap: at the cap, but some of those nodes are unverifiable. pulling: some node really lacks it; shown once the pulls finish. Empty without a Nublado source. See the alert ImageCapMenuImagesHidden.',
          pos(0, 37, 8, 8),
          [t('sum by (state) (max by (state, %s) (imagecap_menu_images%s))' % [cl, fc], legend='{{state}}')],
          steps=[['blue', null]],
          textMode='value_and_name',
          overrides=[
            p.fixedColor('shown', 'green'),
            p.fixedColor('hidden_by_cap', 'red'),
            p.fixedColor('maybe_hidden_by_cap', 'orange'),
            p.fixedColor('pulling', 'blue'),
          ],
        ),
        p.timeseries(
          37,
          'Spawner menu images over time',
          'The same counts (shown, hidden_by_cap, maybe_hidden_by_cap, pulling) over time: a weekly image that stays hidden_by_cap after its release never reaches the menu.',
          pos(8, 37, 8, 8),
          [t('sum by (state) (max by (state, %s) (imagecap_menu_images%s))' % [cl, fc], legend='{{state}}', range=true)],
          'short',
          overrides=[
            p.fixedColor('shown', 'green'),
            p.fixedColor('hidden_by_cap', 'red'),
            p.fixedColor('maybe_hidden_by_cap', 'orange'),
            p.fixedColor('pulling', 'blue'),
          ],
        ),
        p.table(
          38,
          'Images left out of the spawner menu',
          "Each image Nublado prepulls that its menu leaves out because of the cap (hidden_by_cap) or maybe because of it (maybe_hidden_by_cap). `imagecap-exporter check` names each with Nublado's display name and the at-cap nodes that keep it out.",
          pos(16, 37, 8, 8),
          [tt('imagecap_menu_image_hidden%s' % fc, 'A')],
          [cl, 'image', 'state'],
          { image: 'Image', state: 'State', [cl]: 'Cluster' },
          [
            p.column('state', 'State', [
              ['mappings', [p.valueMap({ hidden_by_cap: ['hidden by the cap', 'red'], maybe_hidden_by_cap: ['maybe hidden by the cap', 'orange'] })]],
              ['custom.cellOptions', { type: 'color-text' }],
            ]),
          ],
          'Image',
        ),

        // -------------------------------------------------------------- Prepull loop
        p.row(39, 'Prepull loop', 45),
        p.bargauge(
          40,
          'Prepull loop pairs by source',
          "Per source of wanted images: (eligible node, wanted image) pairs at the node's cap whose image is hidden (its node agent sees it in the runtime) or unlistable (smaller than every image the node lists). The prepuller schedules a pull of each on every pass, for nothing. See the alert ImageCapPrepullLoop.",
          pos(0, 46, 6, 8),
          [t('sort_desc(sum by (source) (max by (source, %s) (imagecap_prepull_loop_pairs%s)))' % [cl, fc], legend='{{source}}')],
          'none',
          [['green', null], ['red', 1]],
        ),
        p.timeseries(
          41,
          'Prepull loop pairs over time',
          'The same pairs per source over time. They drop to 0 when the caps are raised.',
          pos(6, 46, 8, 8),
          [t('sum by (source) (max by (source, %s) (imagecap_prepull_loop_pairs%s))' % [cl, fc], legend='{{source}}', range=true)],
          'short',
        ),
        p.table(
          42,
          'Pairs in the prepull loop',
          "Each (node, wanted image) pair in the loop, whatever source wants it. unlistable: proven from sizes, no node agent needed. hidden: the node's agent sees the image in the runtime.",
          pos(14, 46, 10, 8),
          [tt('imagecap_node_prepull_image_missing%s' % f(extra=['state=~"hidden|unlistable"']), 'A')],
          [cl, 'node', 'image', 'state'],
          { node: 'Node', image: 'Image', state: 'State', [cl]: 'Cluster' },
          [
            p.column('state', 'State', [
              ['mappings', [p.valueMap({ hidden: ['hidden by the cap', 'red'], unlistable: ['unlistable at the cap', 'red'] })]],
              ['custom.cellOptions', { type: 'color-text' }],
            ]),
          ],
          'Node',
        ),

        // ------------------------------------------------------ Wanted image sources
        p.row(21, 'Wanted image sources', 54),
        p.stat(
          22,
          'Wanted image sources up',
          'Whether the last read of each source of wanted images succeeded (the worst of the selected exporters). A failing source keeps its last good list; config and pattern are always up. See the alert ImageCapWantedSourceDown.',
          pos(0, 55, 6, 6),
          [t('min by (source) (imagecap_wanted_source_up%s)' % fc, legend='{{source}}')],
          steps=[['red', null], ['green', 1]],
          textMode='value_and_name',
          mappings=[p.valueMap({ '0': ['down', 'red'], '1': ['up', 'green'] })],
        ),
        p.bargauge(
          23,
          'Images per source',
          'Wanted images each source reports (for a failing source, its last good list). An image several sources want counts for each.',
          pos(6, 55, 6, 6),
          [t('sort_desc(max by (source) (imagecap_wanted_source_images%s))' % fc, legend='{{source}}')],
          'none',
          [['blue', null]],
        ),
        p.timeseries(
          24,
          'Time since last successful source read',
          'Seconds since each source of wanted images was last read successfully, per exporter. It grows while a source fails; the alert ImageCapWantedSourceDown fires after %s of failures.'
          % text.duration(c.alertFor.ImageCapWantedSourceDown),
          pos(12, 55, 12, 6),
          [t('time() - (imagecap_wanted_source_last_success_timestamp_seconds%s > 0)' % fc, legend='{{source}} {{instance}}', range=true)],
          's',
        ),
        p.table(
          25,
          'Wanted images by source',
          'Each wanted image with each source that wants it: the nodes eligible for the image that report it, out of the nodes eligible for it. An image several sources want is on several rows with the same numbers.',
          pos(0, 61, 16, 9),
          [
            tt(perSource('imagecap_prepull_image_nodes' + fc), 'A'),
            tt(perSource('imagecap_prepull_image_eligible_nodes' + fc), 'B'),
            tt(perSource(coverage('')), 'C'),
          ],
          [cl, 'image', 'source', 'Value #A', 'Value #B', 'Value #C'],
          { image: 'Image', source: 'Source', [cl]: 'Cluster' },
          [
            count('Value #A', 'Nodes with image'),
            count('Value #B', 'Eligible nodes'),
            p.column('Value #C', 'Coverage', [
              ['unit', 'percentunit'],
              ['decimals', 0],
              ['thresholds', p.thresholds(coverageSteps)],
              ['custom.cellOptions', { type: 'color-text' }],
            ]),
          ],
          'Coverage',
        ),
        p.timeseries(
          26,
          'Wanted image source errors',
          'Failed reads of the sources of wanted images per second, by kind: nublado (HTTP or decoding errors), kube-fledged (ImageCache list/watch), daemonsets (DaemonSet list/watch).',
          pos(16, 61, 8, 9),
          [t('sum by (kind) (rate(imagecap_source_errors_total%s[$__rate_interval]))'
             % f(node=false, extra=['kind=~"nublado|kube-fledged|daemonsets"']), legend='{{kind}}', range=true)],
          'cps',
          fillOpacity=10,
        ),

        // ----------------------------------------------------------- Exporter health
        p.row(17, 'Exporter health', 70),
        p.timeseries(
          18,
          'Source errors',
          'Failed lists, watches and reads of node data per second, by kind.',
          pos(0, 71, 8, 8),
          [t('sum by (kind) (rate(imagecap_source_errors_total%s[$__rate_interval]))' % fc, legend='{{kind}}', range=true)],
          'cps',
          fillOpacity=10,
        ),
        p.timeseries(
          19,
          'Malformed node data',
          'Malformed node fields seen per second, by field.',
          pos(8, 71, 8, 8),
          [t('sum by (field) (rate(imagecap_invalid_node_data_total%s[$__rate_interval]))' % fc, legend='{{field}}', range=true)],
          'cps',
          fillOpacity=10,
        ),
        p.timeseries(
          20,
          'Data age',
          'Seconds since node data was last refreshed successfully, per exporter.',
          pos(16, 71, 8, 8),
          [t('time() - imagecap_last_update_timestamp_seconds%s' % fc, legend='{{instance}}', range=true)],
          's',
        ),

        // ------------------------------------------------------ Runtime vs reported
        // Needs node agents: the runtime's own image list per node, against what the
        // node reports to the API.
        p.row(27, 'Runtime vs reported', 79),
        p.timeseries(
          28,
          'Images in the runtime, reported and cap',
          'Per node: images the container runtime holds (from the node agent), entries in status.images, and the cap in force (dashed). Where the runtime holds more than the node reports, the cap hides the rest. Nodes without a fresh agent report have no runtime line.',
          pos(0, 80, 12, 9),
          [
            t('imagecap_node_runtime_images%s' % fn, 'A', '{{node}} runtime', range=true),
            t('imagecap_node_images%s' % fn, 'B', '{{node}} reported', range=true),
            t('imagecap_node_max_images%s > 0' % fn, 'C', '{{node}} cap', range=true),
          ],
          'short',
          overrides=[p.dashedLine('C')],
        ),
        p.bargauge(
          29,
          'Images hidden by the cap per node',
          'Images the container runtime holds that the node does not report (0 under the cap), highest first. See the alert ImageCapPrepullLoop for wanted images among them.',
          pos(12, 80, 6, 9),
          [t('sort_desc(imagecap_node_hidden_images%s)' % fn, legend='{{node}}')],
          'none',
          [['green', null], ['orange', 1]],
        ),
        p.stat(
          30,
          'Nodes with an agent report',
          "Nodes whose node agent has sent a fresh report of the runtime's images.",
          pos(18, 80, 6, 4),
          [t('sum(imagecap_node_agent_up%s)' % fn, legend='reporting')],
          steps=[['blue', null]],
        ),
        p.stat(
          31,
          'Nodes without an agent report',
          'Nodes with no fresh node agent report: their hidden images cannot be found. See the alert ImageCapAgentDown.',
          pos(18, 84, 6, 5),
          [t('sum(imagecap_node_agent_up%s == bool 0)' % fn, legend='not reporting')],
          steps=[['green', null], ['red', 1]],
        ),

        // ----------------------------------------------- Image disk vs GC threshold
        // Needs the kubelet stats: the image filesystem (Summary API) and the image
        // garbage collection thresholds (configz).
        p.row(32, 'Image disk vs GC threshold', 89),
        p.timeseries(
          33,
          'Image filesystem use and GC thresholds',
          "Per node: the share of the image filesystem in use, and the kubelet's image garbage collection thresholds (dashed): above the high one it deletes unused images, prepulled ones included, down to the low one.",
          pos(0, 90, 14, 9),
          [
            t('imagecap_node_image_fs_used_bytes%s / (imagecap_node_image_fs_capacity_bytes%s > 0)' % [fn, fn], 'A', '{{node}} used', range=true),
            t('imagecap_node_image_gc_high_threshold_ratio%s' % fn, 'B', '{{node}} GC high', range=true),
            t('imagecap_node_image_gc_low_threshold_ratio%s' % fn, 'C', '{{node}} GC low', range=true),
          ],
          'percentunit',
          overrides=[p.dashedLine('B'), p.dashedLine('C')],
        ),
        p.bargauge(
          34,
          'Headroom to the image GC threshold',
          'Per node, the image GC high threshold minus the share of the image filesystem in use, lowest first. Below %s the alert ImageCapImageFsNearGC fires; below 0 the kubelet is deleting unused images.'
          % text.percent(c.imageFsGCMargin),
          pos(14, 90, 10, 9),
          [t('sort(imagecap_node_image_gc_high_threshold_ratio%s - imagecap_node_image_fs_used_bytes%s / (imagecap_node_image_fs_capacity_bytes%s > 0))'
             % [fn, fn, fn], legend='{{node}}')],
          'percentunit',
          [['red', null], ['orange', 0], ['green', c.imageFsGCMargin]],
          max=1,
          min=-0.2,
        ),
      ],
    },
  },
}
