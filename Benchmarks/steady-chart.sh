#!/usr/bin/env bash
# Draws the steady-state chart (a PNG) from the CSV that cowmem-steady-bench
# writes, with gnuplot: snapshot time against iteration, one line per
# approach (log y axis, since the approaches differ by orders of magnitude),
# one panel per region size and rate.
#
# Usage: steady-chart.sh STEADY.csv OUT.png
#
# gnuplot missing: as root on Debian it is installed (gnuplot-nox, no X11);
# otherwise the chart is skipped with a message and the script exits 0, since
# the tables and the CSV already hold every number.
set -euo pipefail

if [ "$#" -ne 2 ]; then
	echo "usage: $0 STEADY.csv OUT.png" >&2
	exit 2
fi
csv=$1
png=$2

if ! command -v gnuplot >/dev/null 2>&1 && [ "$(id -u)" = 0 ] &&
	command -v apt-get >/dev/null 2>&1; then
	echo 'steady-chart: gnuplot is missing; installing gnuplot-nox with apt-get'
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends gnuplot-nox; } >/dev/null; then
		echo 'steady-chart: apt-get could not install gnuplot-nox'
	fi
fi
if ! command -v gnuplot >/dev/null 2>&1; then
	echo "steady-chart: SKIPPED, gnuplot is not installed (install it with" \
		"'apt-get install gnuplot-nox' as root); the numbers are in $csv"
	exit 0
fi
if [ "$(awk 'END { print NR }' "$csv")" -lt 2 ]; then
	echo "steady-chart: SKIPPED, $csv has no samples"
	exit 0
fi

# The whole gnuplot script: one data block per panel (size, rate), in the
# CSV's order, with one index per approach (every approach in every block, in
# the same order, so a line keeps its colour across panels; an approach that
# did not run in a panel gets a single missing point), then one plot per
# panel. Times in ms.
script=$(awk -F, -v png="$png" '
	NR == 1 { next }
	{
		panel = $2 "|" $3
		if (!(panel in panel_seen)) {
			panel_seen[panel] = 1
			panels[++panel_count] = panel
			if (!($2 in size_seen)) { size_seen[$2] = 1; size_count++ }
			if (!($3 in rate_seen)) { rate_seen[$3] = 1; rate_count++ }
		}
		if (!($1 in approach_seen)) {
			approach_seen[$1] = 1
			approaches[++approach_count] = $1
		}
		key = panel "|" $1
		n = ++points[key]
		x[key, n] = $4
		y[key, n] = $5 * 1000
		if ($4 + 0 > last) last = $4 + 0
	}
	# A colour per approach, the same in every chart; others by index.
	function colour(name, position) {
		if (name == "clone") return "lc rgb \"#7b2cbf\""
		if (name == "newest") return "lc rgb \"#2a9d3f\""
		if (name == "memcpy") return "lc rgb \"#1f6fd1\""
		if (name == "changed") return "lc rgb \"#e07b00\""
		if (name == "fork") return "lc rgb \"#222222\""
		return "lc " position
	}
	function size_name(mib) {
		return mib >= 1024 && mib % 1024 == 0 ? (mib / 1024) " GiB" : mib " MiB"
	}
	END {
		for (p = 1; p <= panel_count; p++) {
			print "$panel" p " << EOD"
			for (a = 1; a <= approach_count; a++) {
				key = panels[p] "|" approaches[a]
				if (points[key] == 0)
					print "1 ?"
				for (i = 1; i <= points[key]; i++)
					print x[key, i], y[key, i]
				if (a < approach_count)
					printf "\n\n"
			}
			print "EOD"
		}
		# A size x rate grid when the CSV is one; two columns otherwise.
		if (size_count * rate_count == panel_count) {
			rows = size_count; columns = rate_count
		} else {
			columns = panel_count < 2 ? 1 : 2
			rows = int((panel_count + columns - 1) / columns)
		}
		printf "set terminal pngcairo size %d,%d font \"sans,9\" noenhanced\n",
			columns * 560, rows * 380 + 40
		printf "set output \"%s\"\n", png
		print "set datafile missing \"?\""
		print "set key bottom right font \"sans,8\" samplen 2 opaque"
		print "set grid xtics ytics mytics"
		print "set logscale y"
		print "set format y \"%g\""
		printf "set xrange [1:%d]\n", (last > 1 ? last : 2)
		print "set xlabel \"iteration\""
		print "set ylabel \"snapshot ms (log scale)\""
		printf "set multiplot layout %d,%d title \"CowMem steady state: " \
			"snapshot time per iteration (writes not included)\"\n", rows, columns
		for (p = 1; p <= panel_count; p++) {
			split(panels[p], part, "|")
			printf "set title \"%s, %s%% of the pages per iteration\"\n",
				size_name(part[1]), part[2]
			line = "plot"
			for (a = 1; a <= approach_count; a++)
				line = line sprintf("%s $panel%d index %d using 1:2 with lines " \
					"lw 1.5 %s title \"%s\"", a > 1 ? "," : "", p, a - 1,
					colour(approaches[a], a), approaches[a])
			print line
		}
		print "unset multiplot"
	}
' "$csv")

gnuplot <<<"$script"
echo "steady-chart: $png"
