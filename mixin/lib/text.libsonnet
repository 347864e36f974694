// Text helpers shared by the alerts and the dashboard.
local isDigit(c) = std.member('0123456789', c);

{
  // A text block folded into one line: its line breaks become spaces, as YAML's `>-`
  // folds a block.
  oneLine(s):: std.strReplace(std.rstripChars(s, '\n'), '\n', ' '),

  // A Prometheus duration in words: '15m' -> '15 minutes', '1h' -> '1 hour'. Anything
  // else ('1h30m') is returned as it is.
  duration(d)::
    local units = { s: 'second', m: 'minute', h: 'hour', d: 'day' };
    local n = std.substr(d, 0, std.length(d) - 1);
    local unit = d[std.length(d) - 1];
    if std.length(n) > 0 && std.objectHas(units, unit)
       && std.length(std.filter(function(c) !isDigit(c), std.stringChars(n))) == 0
    then n + ' ' + units[unit] + (if n == '1' then '' else 's')
    else d,

  // A number of seconds in words, in the largest whole unit: 600 -> '10 minutes'.
  seconds(s)::
    if s % 3600 == 0 then self.duration('%dh' % (s / 3600))
    else if s % 60 == 0 then self.duration('%dm' % (s / 60))
    else self.duration('%ds' % s),

  // A number as PromQL and people write it: 0.9 -> '0.9' (std.toString would give
  // '0.90000000000000002'); at most 6 significant digits.
  number(x):: '%g' % x,

  // A ratio as a whole percentage: 0.9 -> '90%'.
  percent(r):: '%d%%' % std.floor(r * 100 + 0.5),
}
