# plot.gp - the figures of one benchmark run, as one PNG.
#
# Usage: gnuplot -e "rel='REL'; tgt='TGT'; out='OUT.png'" bench/plot.gp
#
# REL rows: "label" median min max (churn relative to bare).
# TGT rows: "label" median min max target (each ratio and its target).
# Either file may be empty; its panel then says so.

set terminal pngcairo size 1280,560 font "sans,10"
set output out
set multiplot layout 1,2 margins 0.07,0.95,0.30,0.92 spacing 0.08
set style fill solid 0.55 border -1
set boxwidth 0.6
set grid ytics
set key top right
set xtics rotate by -35 left noenhanced
set yrange [0:*]
set offsets 0.5, 0.5, 0, 0

has(f) = system("test -s '" . f . "' && echo 1 || echo 0") eq "1"

set title "Churn relative to bare (median, min-max)"
set ylabel "connections/s, bare = 1"
if (has(rel)) {
	plot rel using 0:2:xtic(1) with boxes lc rgb "#4a7ab5" notitle, \
	     '' using 0:2:3:4 with yerrorbars lc rgb "black" pt -1 notitle, \
	     1 with lines dt 2 lc rgb "gray40" title "bare"
} else {
	set label 1 "no data" at graph 0.5, 0.5 center
	plot [0:1] [0:1] -1 notitle
	unset label 1
}

set title "Ratios and their targets (median, min-max; log scale)"
set ylabel "ratio"
set logscale y 2
set key top left
if (has(tgt)) {
	stats tgt using 3:4 nooutput
	lo = STATS_min_x < 0.5 ? STATS_min_x / 1.25 : 0.4
	hi = STATS_max_y > 2 ? STATS_max_y * 1.25 : 2.5
	set yrange [lo:hi]
	plot tgt using 0:2:3:4:xtic(1) with yerrorbars pt 7 ps 1.2 \
		lc rgb "#3a7a3a" title "measured", \
	     '' using 0:5 with points pt 9 ps 1.6 lc rgb "#c03030" \
		title "target", \
	     1 with lines dt 2 lc rgb "gray40" notitle
} else {
	unset logscale y
	set label 1 "no data" at graph 0.5, 0.5 center
	plot [0:1] [0:1] -1 notitle
}
unset multiplot
