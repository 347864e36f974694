// Prometheus alerting rules for imagecap-exporter.
//
// Background: the kubelet reports at most nodeStatusMaxImages (default 50) images in
// node.status.images, largest first. A node that reports as many images as its cap may
// hold more that nobody can see, so image prepullers pull them again and again and
// spawner menus built from node.status.images leave them out. See docs/runbook.md.
//
// Conventions used throughout:
//
// * No expression depends on the scrape job's name except the exporter's own `up`
//   (ImageCapExporterDown), which has to select the target somehow
//   (_config.imagecapSelector).
// * Node-level series (imagecap_node_*{node}) are combined with `and`/`unless` on ALL
//   their labels, and per-image series with `ignoring(image)`: a series is only ever
//   joined with a series from the same scrape target (same job, instance, pod,
//   cluster, ...). `on(node)` alone would be wrong as soon as two exporters report the
//   same node (an HA pair, or two clusters with equal node names): the two sides would
//   then match many-to-many, or one exporter's numbers would be attributed to another.
//   With two exporters every alert exists once per exporter (its `instance` label
//   differs); group Alertmanager notifications by [alertname, node] to get one.
// * "At the cap" means imagecap_node_at_cap was 1 on every scrape of the last
//   _config.steadyWindow (min_over_time). This keeps alerts from flapping: a node that
//   is at the cap only on alternating scrapes never counts as at the cap, and one
//   failed scrape (which makes Prometheus mark the instant series stale) neither resets
//   the `for:` timer nor resolves a firing alert, because range functions skip
//   staleness markers. A single scrape below the cap is enough to leave the state.
// * Nodes whose cap is unlimited (imagecap_node_max_images == -1) are never at or near
//   their cap: imagecap_node_at_cap and the cap ratio are 0 for them. The node-cap
//   alerts also exclude them explicitly, so that they stay silent for such a node
//   whatever the other series say.
// * Every alert carries `severity` and the annotations `summary`, `description` and
//   `runbook_url` (_config.runbookURLPattern; by default docs/runbook.md, anchor =
//   alert name in lower case).
// * Descriptions are written as text blocks for reading here and folded into one line
//   (oneLine), as YAML's `>-` would.

local text = import '../lib/text.libsonnet';
local oneLine = text.oneLine;

{
  prometheusAlerts+:: {
    local c = $._config,
    local w = c.steadyWindow,

    // A Go template that looks up `metric` for the alert's node on the alert's
    // instance and renders `body` with the result (`.`) when there is one.
    local nodeLookup(metric, body) =
      '{{ with printf "last_over_time(' + metric + '{node=%q,instance=%q}[' + w + '])"'
      + ' $labels.node $labels.instance | query }}' + body + '{{ end }}',
    local count = '{{ . | first | value | printf "%.0f" }}',
    local percent = '{{ . | first | value | humanizePercentage }}',
    local reported = nodeLookup('imagecap_node_images', count),
    local cap = nodeLookup('imagecap_node_max_images', count),

    // The node is steadily at its cap, and its cap is not unlimited.
    local steadilyAtCap = 'min_over_time(imagecap_node_at_cap[%s]) == 1' % w,

    local alert(name, severity, expr, summary, description, extra={}) = {
      alert: name,
      expr: expr,
      'for': c.alertFor[name],
      labels: { severity: severity },
      annotations: {
        summary: summary,
        description: oneLine(description),
        runbook_url: c.runbookURLPattern % std.asciiLower(name),
      },
    } + extra,

    groups+: [
      // ---------------------------------------------------------------------------
      // Nodes at or close to their image-list cap.
      // ---------------------------------------------------------------------------
      {
        name: 'imagecap-node-cap',
        rules: [
          // The node lists exactly as many images as its kubelet reports at most (50
          // by default), so any further image on it is invisible to the API.
          // Value: number of images the node reports.
          alert(
            'ImageCapNodeAtCap',
            'warning',
            |||
              last_over_time(imagecap_node_images[%(w)s])
                and (%(steadilyAtCap)s)
                unless (imagecap_node_max_images < 0)
            ||| % { w: w, steadilyAtCap: steadilyAtCap },
            "Node {{ $labels.node }} reports as many images as its kubelet's nodeStatusMaxImages cap.",
            'Node {{ $labels.node }} reports {{ $value | printf "%.0f" }}/' + cap + '\n' + |||
              images: the kubelet's nodeStatusMaxImages cap is reached, so images beyond
              it are hidden from node.status.images. Prepullers will pull them again and
              spawner menus will not offer them. Raise the cap (nodeStatusMaxImages: -1)
              and restart the kubelet.
            |||,
          ),

          // At least nearCapRatio of the cap, sustained over the steady window, and not
          // (steadily) at the cap, which is ImageCapNodeAtCap's business. A node that
          // oscillates between 49/50 and 50/50 is not steadily at the cap and so is
          // reported here.
          // Value: number of images the node reports.
          alert(
            'ImageCapNodeNearCap',
            'info',
            |||
              last_over_time(imagecap_node_images[%(w)s])
                and (min_over_time(imagecap_node_images_cap_ratio[%(w)s]) >= %(ratio)s)
                unless (%(steadilyAtCap)s)
                unless (imagecap_node_max_images < 0)
            ||| % { w: w, ratio: text.number(c.nearCapRatio), steadilyAtCap: steadilyAtCap },
            'Node {{ $labels.node }} reports at least %s of its image-list cap.' % text.percent(c.nearCapRatio),
            'Node {{ $labels.node }} reports {{ $value | printf "%.0f" }}/' + cap + '\n'
            + 'images (' + nodeLookup('imagecap_node_images_cap_ratio', percent) + '\n' + |||
              of the kubelet's nodeStatusMaxImages cap). A few more images and it will
              hide images from node.status.images. Raise the cap
              (nodeStatusMaxImages: -1) before it is reached.
            |||,
          ),
        ],
      },

      // ---------------------------------------------------------------------------
      // Wanted (prepulled) images that nodes do not report, what that does to the
      // prepuller and the spawner menu, and the sources that say which images are
      // wanted where.
      // imagecap_node_prepull_image_missing{node,image,state} is 1 for every (node,
      // wanted image) pair where the node is eligible for that image (each source
      // decides where its images are wanted) and does not report it, and has no series
      // otherwise, so these alerts resolve as soon as the node reports the image. Every
      // state is handled on purpose:
      //  * hidden (the node is at its cap and its agent sees the image in the runtime)
      //    and unlistable (at its cap, and smaller than every image it lists, so the
      //    kubelet can never list it): the prepuller pulls it on every pass, for
      //    nothing. The exporter counts these pairs per source in
      //    imagecap_prepull_loop_pairs{source}: ImageCapPrepullLoop.
      //  * absent: proven not on the node (under its cap; or at it, and larger than
      //    the smallest image it lists, or not in its runtime): ImageCapPrepullImageMissing.
      //  * unverifiable (at its cap, nothing proves either way), and series without a
      //    `state` (older exporters): Missing while the node is not steadily at its cap
      //    (see the header) or its cap is unlimited, else ImageCapPrepullImageUnverifiable.
      // So every pair is in exactly one of the three. The exporter's own
      // imagecap_node_prepull_missing_images{state} judges "at the cap" by the instant
      // value instead. The joins with node series ignore `image` and `state`, which
      // node series do not have.
      // ---------------------------------------------------------------------------
      {
        name: 'imagecap-prepull',
        rules: [
          // The image really is not on the node: the node is below its cap (or
          // unlimited), so its list is complete, or the exporter has proven it absent
          // at the cap. The prepuller has not managed to pull it.
          // Value: 1.
          alert(
            'ImageCapPrepullImageMissing',
            'warning',
            |||
              (
                  (imagecap_node_prepull_image_missing{state!~"hidden|unlistable"} == 1)
                    unless ignoring(image, state) (
                          %(steadilyAtCap)s
                            unless imagecap_node_max_images < 0
                        )
              )
                or
              imagecap_node_prepull_image_missing{state="absent"} == 1
            ||| % { steadilyAtCap: steadilyAtCap },
            'Wanted image {{ $labels.image }} is not on node {{ $labels.node }}.',
            |||
              Node {{ $labels.node }} does not have the wanted image {{ $labels.image }}.
            ||| + '{{ if and (eq $labels.state "absent") (printf "last_over_time(imagecap_node_at_cap{node=%q,instance=%q}['
            + w + ']) == 1" $labels.node $labels.instance | query) }}It is at its image-list cap ('
            + reported + '/' + cap + '\n'
            + 'images), but the image is larger than the smallest image the node lists, or\n'
            + 'the node agent does not find it in the container runtime, so it really is not there.'
            + '{{ else }}It is below its image-list cap (' + reported + '\n'
            + 'images reported, cap '
            + nodeLookup(
              'imagecap_node_max_images',
              '{{ with . | first | value }}{{ if lt . 0.0 }}unlimited{{ else }}{{ printf "%.0f" . }}{{ end }}{{ end }}'
            ) + '),\n' + |||
              so its image list is complete and the image really is not there.{{ end }}
              Check the prepuller and whether the image can be pulled on this node.
            |||,
          ),

          // The node is at its cap and nothing proves where the image is: it may well
          // be on disk but cannot be seen in node.status.images (or it may be absent):
          // the prepuller keeps pulling it and the spawner menu does not offer it.
          // Value: 1.
          alert(
            'ImageCapPrepullImageUnverifiable',
            'warning',
            |||
              (imagecap_node_prepull_image_missing{state!~"hidden|unlistable|absent"} == 1)
                and ignoring(image, state) (
                      %(steadilyAtCap)s
                        unless imagecap_node_max_images < 0
                    )
            ||| % { steadilyAtCap: steadilyAtCap },
            'Wanted image {{ $labels.image }} cannot be seen on node {{ $labels.node }}, which is at its image-list cap.',
            'Node {{ $labels.node }} reports ' + reported + '/' + cap + '\n' + |||
              images, its nodeStatusMaxImages cap, and the wanted image
              {{ $labels.image }} is not among them. It may be on the node but cannot be
              verified: prepullers will pull it again and spawner menus will not offer
              it. Raise the cap (nodeStatusMaxImages: -1) and restart the kubelet.
            |||,
          ),

          // Pairs of one source at a node's cap that are hidden or unlistable: each is a
          // pull the prepuller schedules on every pass and never sees done, because the
          // node will not list the image while the cap holds. This replaces
          // ImageCapWantedImageHidden (hidden pairs only, which needed node agents):
          // unlistable pairs are proven by sizes alone. One alert per source; the pairs
          // themselves are the state="hidden|unlistable" series of
          // imagecap_node_prepull_image_missing. last_over_time: a failed scrape neither
          // resets the `for:` timer nor resolves the alert; a count of 0 does both.
          // Value: the number of pairs.
          local pairs = '{{ $value | printf "%.0f" }} {{ if eq $value 1.0 }}pair{{ else }}pairs{{ end }}';
          alert(
            'ImageCapPrepullLoop',
            'warning',
            |||
              last_over_time(imagecap_prepull_loop_pairs[%s]) > 0
            ||| % w,
            'The prepuller pulls wanted images of source {{ $labels.source }} again and again on nodes at their image-list cap ('
            + pairs + ').',
            'imagecap-exporter {{ $labels.instance }} counts ' + pairs + ' of an eligible node and a wanted\n' + |||
              image of source {{ $labels.source }} at the node's nodeStatusMaxImages cap,
              with the image hidden (the node agent sees it
              in the container runtime) or unlistable (smaller than every image the node
              lists, so the kubelet can never list it). The prepuller schedules a pull of
              each on every pass, for nothing, and a spawner menu built from the nodes'
              lists leaves the image out.
            ||| + '{{ with printf `count by (node) (imagecap_node_prepull_image_missing{state=~"hidden|unlistable",instance=%q} == 1)`'
            + ' $labels.instance | query | sortByLabel "node" }}Nodes with such pairs (from any source):'
            + '{{ range . }} {{ .Labels.node }} ({{ .Value | printf "%.0f" }}){{ end }}.{{ end }}\n'
            + |||
              Raise the cap (nodeStatusMaxImages: -1) and restart the kubelet.
            |||,
          ),

          // An image Nublado prepulls is left out of its spawner menu because of the
          // cap: every node Nublado counts as missing it is at its cap and holds it
          // hidden or can never list it (the exporter's `hidden_by_cap`). It stays out
          // of the menu as long as the cap holds, whatever the prepuller does.
          // `maybe_hidden_by_cap` images (some of those nodes unverifiable) do not fire
          // here: ImageCapPrepullImageUnverifiable covers their pairs. Needs a Nublado
          // source.
          // Value: 1.
          alert(
            'ImageCapMenuImagesHidden',
            'warning',
            |||
              imagecap_menu_image_hidden{state="hidden_by_cap"} == 1
            |||,
            "Nublado's spawner menu leaves out {{ $labels.image }}, hidden by nodes' image-list cap.",
            |||
              Nublado prepulls {{ $labels.image }} but its spawner menu does not offer it:
              every node Nublado counts as missing it is at its nodeStatusMaxImages cap and
              holds it hidden from the API or can never list it. It stays out of the menu
              as long as the cap holds, whatever the prepuller does.
            ||| + '{{ with printf `last_over_time(imagecap_menu_images{state="hidden_by_cap",instance=%q}[' + w + '])`'
            + ' $labels.instance | query }}The cap keeps ' + count + " of Nublado's images out of the menu"
            + '{{ with printf `last_over_time(imagecap_menu_images{state="shown",instance=%q}[' + w + '])`'
            + ' $labels.instance | query }}, which shows ' + count + '{{ end }}.{{ end }}\n'
            + |||
              Raise the cap (nodeStatusMaxImages: -1) and restart the kubelet on those
              nodes; `imagecap-exporter check` names them.
            |||,
          ),

          // A source of wanted images (Nublado's prepuller status, kube-fledged
          // ImageCaches, prepuller DaemonSets) has failed every read for the `for:`
          // duration. The exporter keeps its last good list, so the two alerts above
          // still work, on images and node sets that may be out of date.
          // last_over_time: a failed scrape of the exporter neither resets the `for:`
          // timer nor resolves the alert; one successful read (up == 1) does both. The
          // `config` and `pattern` sources are always up.
          // Value: 0.
          alert(
            'ImageCapWantedSourceDown',
            'warning',
            |||
              last_over_time(imagecap_wanted_source_up[%s]) == 0
            ||| % w,
            'imagecap-exporter {{ $labels.instance }} cannot read the wanted images of source {{ $labels.source }}.',
            |||
              imagecap-exporter {{ $labels.instance }} (job {{ $labels.job }}) has failed
              every read of its {{ $labels.source }} source of wanted images for %s.
            ||| % text.duration(c.alertFor.ImageCapWantedSourceDown)
            + '{{ with printf "time() - (last_over_time(imagecap_wanted_source_last_success_timestamp_seconds{source=%q,instance=%q}['
            + w + ']) > 0)" $labels.source $labels.instance | query }}'
            + 'Its last successful read was {{ . | first | value | humanizeDuration }} ago, and it keeps using the list of '
            + '{{ with printf "last_over_time(imagecap_wanted_source_images{source=%q,instance=%q}['
            + w + '])" $labels.source $labels.instance | query }}' + count + '{{ end }}'
            + ' images read then: images the source has added or dropped since, and changes to the nodes it wants them on,'
            + ' are not seen, so missing-image alerts and metrics for its images may be stale.'
            + "{{ else }}It has not read it successfully since it started, so none of this source's images are checked.{{ end }}\n"
            + |||
              Check the exporter's log, its access to the source (RBAC, network policy,
              URL and token) and the source itself.
            |||,
          ),
        ],
      },

      // ---------------------------------------------------------------------------
      // What is on the node beyond the API: the node agents (a DaemonSet that reads
      // the container runtime's image list and reports it to the exporter) and the
      // kubelet's image filesystem stats.
      // ---------------------------------------------------------------------------
      {
        name: 'imagecap-node-runtime',
        rules: [
          // A node's image list from its container runtime is missing, so images the
          // cap hides on it cannot be found (its wanted images at the cap are
          // unverifiable unless their sizes prove them absent or unlistable). Two forms,
          // told apart by the `reason` label:
          //  * reason="no-report": the exporter has no fresh report from the node's
          //    agent (imagecap_node_agent_up == 0; exported for every node only when
          //    agents are configured): the agent is not running there, cannot reach
          //    the exporter, or is rejected by it.
          //  * reason="runtime": the agent runs but cannot list the runtime's images
          //    (its own imagecap_runtime_up == 0, scraped from the agent).
          // A node whose agent is down and was also failing to read the runtime has
          // both, as two alerts. last_over_time: one failed scrape neither resets the
          // `for:` timer nor resolves the alert; one good report (1) does both.
          // Value: 0.
          alert(
            'ImageCapAgentDown',
            'warning',
            |||
              label_replace(last_over_time(imagecap_node_agent_up[%(w)s]) == 0, "reason", "no-report", "", "")
                or
              label_replace(last_over_time(%(runtimeUp)s[%(w)s]) == 0, "reason", "runtime", "", "")
            ||| % {
              w: w,
              runtimeUp: 'imagecap_runtime_up'
                         + (if c.imagecapAgentSelector == '' then '' else '{' + c.imagecapAgentSelector + '}'),
            },
            '{{ if eq $labels.reason "runtime" }}The node agent on {{ $labels.node }} cannot read the container runtime{{ else }}imagecap-exporter has no fresh node agent report for node {{ $labels.node }}{{ end }}.',
            |||
              {{ if eq $labels.reason "runtime" }}The node agent {{ $labels.instance }} on node
              {{ $labels.node }} has failed to list the container runtime's images for
              %(for)s (its imagecap_runtime_up is 0): check its log, the CRI socket it
              is given and its access to it.{{ else }}imagecap-exporter
              {{ $labels.instance }} has had no fresh report from the node agent of node
              {{ $labels.node }} for %(for)s: check that the agent pod runs on the
              node, its log, and that it can reach the exporter.{{ end }} Until it
              reports, images hidden by the node's image-list cap cannot be found
              there.
            ||| % { 'for': text.duration(c.alertFor.ImageCapAgentDown) },
          ),

          // The node's image filesystem is within imageFsGCMargin of the kubelet's
          // image garbage collection high threshold (imageGCHighThresholdPercent).
          // Above it the kubelet deletes unused images, least recently used first,
          // until use is down to the low threshold: prepulled images nobody runs right
          // now go first, and prepullers pull them again. Needs the kubelet stats
          // (imagecap_node_image_fs_*, from the Summary API) and configz (the
          // thresholds); a node without either has no series and never fires.
          // Value: the image filesystem's used share.
          alert(
            'ImageCapImageFsNearGC',
            'info',
            |||
              (
                  last_over_time(imagecap_node_image_fs_used_bytes[%(w)s])
                / (last_over_time(imagecap_node_image_fs_capacity_bytes[%(w)s]) > 0)
              )
                >= (last_over_time(imagecap_node_image_gc_high_threshold_ratio[%(w)s]) - %(margin)s)
            ||| % { w: w, margin: text.number(c.imageFsGCMargin) },
            "Node {{ $labels.node }}'s image filesystem is {{ $value | humanizePercentage }} full, close to the kubelet's image GC threshold.",
            "Node {{ $labels.node }}'s image filesystem is {{ $value | humanizePercentage }} full; the\n"
            + 'kubelet starts deleting unused images at '
            + nodeLookup('imagecap_node_image_gc_high_threshold_ratio', percent)
            + ' (imageGCHighThresholdPercent)'
            + nodeLookup('imagecap_node_image_gc_low_threshold_ratio', ' and goes on down to ' + percent) + '.\n' + |||
              Prepulled images that no pod runs right now are deleted first, and
              prepullers pull them again. Free space (fewer wanted images, pruning) or
              give the node a larger image filesystem.
            |||,
          ),
        ],
      },

      // ---------------------------------------------------------------------------
      // The exporter itself. When it is down its node series go stale, so the node
      // alerts above resolve within the steady window; these alerts say why.
      // ---------------------------------------------------------------------------
      {
        name: 'imagecap-exporter',
        rules: [
          // Selects the exporter's targets with _config.imagecapSelector. Two cases:
          //  * a target exists but cannot be scraped: up == 0 (labels job, instance);
          //  * no target exists at all: absent(...) (no labels). Kubernetes service
          //    discovery drops a pod that is not Ready (or gone), so an exporter that
          //    crash-loops or never becomes ready has no `up` series and `up == 0`
          //    alone would stay silent. This also fires if the rules are loaded into a
          //    Prometheus that does not scrape the exporter, which is a
          //    misconfiguration.
          // Value: 0 (target down) or 1 (no target).
          alert(
            'ImageCapExporterDown',
            'critical',
            |||
              up{%(sel)s} == 0
                or absent(up{%(sel)s})
            ||| % { sel: c.imagecapSelector },
            'imagecap-exporter cannot be scraped{{ with $labels.instance }} at {{ . }}{{ end }}.',
            |||
              {{ if $labels.instance }}Prometheus cannot scrape the imagecap-exporter
              target {{ $labels.instance }} (job {{ $labels.job }}).{{ else }}Prometheus
              has no scrape target matching up{%s}.{{ end }}
              Node image-list caps and prepulled images are not being monitored.
            ||| % c.imagecapSelector,
          ),

          // Up and scraped, but never had node data: Stale cannot see this (there is
          // no refresh time yet), and with a static scrape config Down does not either.
          // Value: 1 (imagecap_build_info).
          alert(
            'ImageCapExporterNoData',
            'warning',
            |||
              imagecap_build_info unless on(job, instance) imagecap_last_update_timestamp_seconds
            |||,
            'imagecap-exporter {{ $labels.instance }} has had no node data since it started.',
            |||
              imagecap-exporter {{ $labels.instance }} (job {{ $labels.job }}) answers
              scrapes but has not completed a single node list for %s, so it
              exports no node metrics at all. Its /readyz is failing; check its logs,
              its access to the Kubernetes API and its RBAC (list/watch nodes).
            ||| % text.duration(c.alertFor.ImageCapExporterNoData),
          ),

          // The exporter answers scrapes but has not refreshed its node data for
          // staleAfterSeconds (Kubernetes API unreachable, RBAC, a stuck watch). Its
          // node metrics are then out of date.
          // Value: seconds since the last successful refresh.
          alert(
            'ImageCapExporterStale',
            'warning',
            |||
              time() - imagecap_last_update_timestamp_seconds > %d
            ||| % c.staleAfterSeconds,
            'imagecap-exporter {{ $labels.instance }} has not refreshed node data for {{ $value | humanizeDuration }}.',
            |||
              imagecap-exporter {{ $labels.instance }} (job {{ $labels.job }}) last
              refreshed its node data {{ $value | humanizeDuration }} ago (more than %s).
              Its node metrics are out of date; check its logs, its access to the
              Kubernetes API and its RBAC (list/watch nodes).
            ||| % text.seconds(c.staleAfterSeconds),
          ),
        ],
      },
    ],
  },
}
