// The imagecap-exporter monitoring mixin: Prometheus alerts (prometheusAlerts) and a
// Grafana dashboard (grafanaDashboards), both built from _config (config.libsonnet).
(import 'config.libsonnet') +
(import 'alerts/alerts.libsonnet') +
(import 'dashboards/dashboards.libsonnet')
