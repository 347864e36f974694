// Settings of the imagecap-exporter mixin. Override any of them when importing it:
//
//   (import 'mixin.libsonnet') + {
//     _config+:: {
//       imagecapSelector: 'job="monitoring/imagecap-exporter"',
//       runbookURLPattern: 'https://runbooks.example.org/imagecap#%s',
//       alertFor+: { ImageCapNodeNearCap: '3h' },
//     },
//   }
//
// then generate the files as mixin/generate.sh does.
{
  _config+:: {
    // Selects the exporter's scrape targets. It is used by ImageCapExporterDown only,
    // which has to find the exporter's `up` series somehow: no other expression
    // depends on the job, because every other expression joins series of one scrape
    // target with each other only (see alerts/alerts.libsonnet). The default matches
    // a ServiceMonitor or PodMonitor of a Helm release "imagecap-exporter" or
    // "<release>-imagecap-exporter", a static job "imagecap-exporter", ...
    imagecapSelector: 'job=~".*imagecap-exporter.*"',

    // Selects the node agents' own series (imagecap_runtime_*), which the agents
    // export when Prometheus scrapes them directly (their own job). Empty: any job;
    // the metric names are the agent's alone. ImageCapAgentDown reads
    // imagecap_runtime_up with it.
    imagecapAgentSelector: '',

    // The label that tells clusters apart when one Prometheus (or Thanos, Mimir...)
    // holds several; the dashboard has a variable for it.
    clusterLabel: 'cluster',

    // ImageCapNodeNearCap: the share of the cap (images reported / nodeStatusMaxImages)
    // from which a node is near its cap.
    nearCapRatio: 0.9,

    // A node is "steadily" in a state when it was in it on every scrape of this window
    // (min_over_time), and series are looked up over it (last_over_time), so that one
    // failed scrape neither resets a `for:` timer nor resolves a firing alert.
    steadyWindow: '5m',

    // ImageCapImageFsNearGC: how close (as a ratio of the image filesystem's
    // capacity) use may come to the kubelet's image GC high threshold before the alert
    // fires. 0.05: within 5 points, e.g. at 80% used for the default threshold of 85%.
    imageFsGCMargin: 0.05,

    // ImageCapExporterStale: node data older than this is stale.
    staleAfterSeconds: 600,

    // How long each alert's condition must hold before it fires.
    alertFor: {
      ImageCapNodeAtCap: '15m',
      ImageCapNodeNearCap: '1h',
      ImageCapPrepullImageMissing: '30m',
      ImageCapPrepullImageUnverifiable: '15m',
      ImageCapWantedSourceDown: '15m',
      ImageCapPrepullLoop: '15m',
      ImageCapMenuImagesHidden: '30m',
      ImageCapAgentDown: '15m',
      ImageCapImageFsNearGC: '30m',
      ImageCapExporterDown: '5m',
      ImageCapExporterNoData: '15m',
      ImageCapExporterStale: '5m',
    },

    // Every alert's runbook_url: this pattern with %s replaced by the alert's name in
    // lower case (the anchor of its section in docs/runbook.md).
    runbookURLPattern: 'https://github.com/lsst-sqre/imagecap-exporter/blob/main/docs/runbook.md#%s',

    // The Grafana dashboard.
    dashboardUID: 'imagecap-exporter',
    dashboardTitle: 'Image cap (nodeStatusMaxImages)',
    dashboardTags: ['kubernetes', 'kubelet', 'imagecap'],
    dashboardRefresh: '1m',
    dashboardTimezone: '',
    dashboardFrom: 'now-6h',
  },
}
