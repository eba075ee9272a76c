#!/usr/bin/env bash
# Draws the benchmark chart (a small PNG) from the CSV that cowmem-bench
# writes, with gnuplot.
#
# Usage: chart.sh BENCH.csv OUT.png
#
# gnuplot missing: as root on Debian it is installed (gnuplot-nox, no X11);
# otherwise the chart is skipped with a message and the script exits 0, since
# the tables and the CSV already hold every number.
set -euo pipefail

if [ "$#" -ne 2 ]; then
	echo "usage: $0 BENCH.csv OUT.png" >&2
	exit 2
fi
csv=$1
png=$2

if ! command -v gnuplot >/dev/null 2>&1 && [ "$(id -u)" = 0 ] &&
	command -v apt-get >/dev/null 2>&1; then
	echo 'chart: gnuplot is missing; installing gnuplot-nox with apt-get'
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends gnuplot-nox; } >/dev/null; then
		echo 'chart: apt-get could not install gnuplot-nox'
	fi
fi
if ! command -v gnuplot >/dev/null 2>&1; then
	echo "chart: SKIPPED, gnuplot is not installed (install it with" \
		"'apt-get install gnuplot-nox' as root); the numbers are in $csv"
	exit 0
fi

# The medians, as gnuplot data blocks. Panels 2-4 show the largest size in
# the CSV, with the smallest thread count for the write and memory panels.
data=$(awk -F, '
	$7 != "median" { next }
	{
		key = $2 "|" $3 "|" $4 "|" $5 "|" $6
		value[$1 "|" key] = $8
		sizes[$1] = 1
		if ($1 + 0 > largest) largest = $1 + 0
		if ($3 == "read") threads[$5] = 1
		if ($3 == "write" && (least == "" || $5 + 0 < least)) least = $5 + 0
	}
	function get(size, key) {
		return ((size "|" key) in value) ? value[size "|" key] : "?"
	}
	function sorted_keys(set, out,   n, k, i, j, t) {
		n = 0
		for (k in set) out[++n] = k + 0
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && out[j - 1] > out[j]; j--) {
				t = out[j]; out[j] = out[j - 1]; out[j - 1] = t
			}
		return n
	}
	function percent(size, key,   v) {
		v = get(size, key)
		return v == "?" ? "?" : 100 * v / size
	}
	END {
		split("memcpy-fresh memcpy-warm fork memfd-private cowmem-clone cowmem-reclone-1% cowmem-clone-of-clone", copiers, " ")
		print "$copy << EOD"
		n = sorted_keys(sizes, size_list)
		tics = ""
		for (i = 1; i <= n; i++)
			tics = tics (i > 1 ? ", " : "") "\"" size_list[i] "\" " size_list[i]
		for (i = 1; i <= n; i++) {
			line = size_list[i]
			for (c = 1; c <= 7; c++)
				line = line " " get(size_list[i], copiers[c] "|copy|-|1|ms")
			print line
		}
		print "EOD"

		split("fork-child memfd-private cowmem-clone cowmem-source", writers, " ")
		split("0.1% 1% 10% all", patterns, " ")
		print "$write << EOD"
		for (p = 1; p <= 4; p++) {
			line = "\"" patterns[p] "\""
			for (w = 1; w <= 4; w++)
				line = line " " get(largest, writers[w] "|write|" patterns[p] "|" least "|us_per_page")
			print line
		}
		print "EOD"

		split("fork-child memfd-private cowmem-clone", readers, " ")
		print "$read << EOD"
		n = sorted_keys(threads, thread_list)
		for (t = 1; t <= n; t++) {
			line = "\"" thread_list[t] "\""
			for (w = 1; w <= 3; w++)
				line = line " " get(largest, readers[w] "|read|all|" thread_list[t] "|us_per_page")
			print line
		}
		print "EOD"

		split("fork|copy|-|1 fork-child|write|0.1%|L fork-child|write|1%|L fork-child|write|10%|L fork-child|read|all|L", fork_keys, " ")
		split("memfd-private|copy|-|1 memfd-private|write|0.1%|L memfd-private|write|1%|L memfd-private|write|10%|L memfd-private|read|all|L", memfd_keys, " ")
		split("cowmem-clone|copy|-|1 cowmem-clone|write|0.1%|L cowmem-clone|write|1%|L cowmem-clone|write|10%|L cowmem-clone|read|all|L", clone_keys, " ")
		split("copy/clone;write 0.1%;write 1%;write 10%;read all", steps, ";")
		print "$memory << EOD"
		for (s = 1; s <= 5; s++) {
			line = "\"" steps[s] "\""
			k1 = fork_keys[s]; k2 = memfd_keys[s]; k3 = clone_keys[s]
			sub(/\|L$/, "|" least, k1); sub(/\|L$/, "|" least, k2); sub(/\|L$/, "|" least, k3)
			line = line " " percent(largest, k1 "|mem_mib") " " percent(largest, k2 "|mem_mib") " " percent(largest, k3 "|mem_mib")
			print line
		}
		print "EOD"
		printf "largest = %d\nleast = %d\nsmallest = %d\n", largest, least, size_list[1]
		printf "set xtics (%s)\n", tics
	}
' "$csv")

gnuplot <<EOF
$data
set terminal pngcairo size 1100,760 font "sans,9" noenhanced
set output "$png"
set datafile missing "?"
set key top left font "sans,8" samplen 2
set grid ytics
size_label = largest >= 1024 && largest % 1024 == 0 ? sprintf("%d GiB", largest / 1024) : sprintf("%d MiB", largest)
set multiplot layout 2,2 title "CowMem benchmark: medians (" . size_label . " regions in panels 2-4)"

set title "Making the copy (ms, log scales)"
set logscale xy
set xrange [smallest / 1.6 : largest * 1.6]
set offsets 0, 0, graph 0.3, 0
set xlabel "region size (MiB)"
set format y "%g"
plot for [c=2:8] \$copy using 1:c with linespoints lw 2 pt 7 ps 0.6 \
	title word("memcpy-fresh memcpy-warm fork MAP_PRIVATE-memfd cowmem-clone cowmem-reclone-1% cowmem-clone-of-clone", c-1)

unset logscale
unset xlabel
unset xrange
set xtics autofreq
set key top left
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9

set title sprintf("First write, µs per page (%d thread%s)", least, least == 1 ? "" : "s")
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
plot for [c=2:5] \$write using c:xtic(1) \
	title word("fork-child MAP_PRIVATE-memfd cowmem-clone cowmem-source", c-1)

set title "Reading every page of a fresh copy, µs per page"
set xlabel "threads"
plot for [c=2:4] \$read using c:xtic(1) \
	title word("fork-child MAP_PRIVATE-memfd cowmem-clone", c-1)

set title sprintf("Memory added, %% of region (%d thread%s)", least, least == 1 ? "" : "s")
unset xlabel
plot for [c=2:4] \$memory using c:xtic(1) \
	title word("fork(-child) MAP_PRIVATE-memfd cowmem-clone", c-1)
unset multiplot
EOF
echo "chart: $png"
