#!/bin/sh
# make_default_table.sh - builds config/default/words.vec, the built-in table
# that `embedding-server` serves when run with no configuration.
#
# Source: the King James Bible (public domain) as Debian's bible-kjv-text
# package ships it (/usr/lib/bible.data), printed verse by verse with the
# `bible` command of package bible-kjv. Text is lowercased and reduced to
# letters; each verse is one training line. Vectors: Debian's `fasttext
# skipgram` (dim 64, 25 epochs, minCount 5, window 5, 2 threads); the
# .vec is then rewritten by make_default_table.py with values rounded to 5
# significant digits and the "</s>" line marker dropped, so the committed
# file stays under 3 MB.
#
# Needs: bible-kjv, bible-kjv-text, fasttext, /usr/bin/python3 with numpy and
# gensim (for the neighbour check printed at the end).
# Training with 2 threads is not bit-reproducible; neighbours are stable.
#
# Neighbours (gensim most_similar, cosine, top 8) of the committed file,
# 5278 words x 64:
#   gold   -> silver, overlay, snuffers, spoons, ophir, overlaid, fleshhooks, spoon
#   sheep  -> oxen, fatlings, shepherd, slaughter, ox, beeves, shepherds, wolf
#   water  -> thirsty, pools, fountain, watered, drink, waters, athirst, fountains
#   moses  -> aaron, commanded, joshua, nun, miriam, israel, spake, abihu
#   queen  -> vashti, esther, haman, banquet, shushan, mordecai
# (king's neighbours are kings' names: benhadad, nebuchadrezzar, jeconiah...)
#
# Usage: scripts/make_default_table.sh [OUT.vec]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../config/default/words.vec"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for tool in bible fasttext; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

# Genesis 1:1 through Revelation 22:21, one verse per line, reference first.
bible -f Gen1:1-Rev22:21 >"$work/kjv.txt"
# Drop the "Ge1:1 " reference, lowercase, keep letters only.
sed 's/^[^ ]* //' "$work/kjv.txt" | tr 'A-Z' 'a-z' | tr -c 'a-z\n' ' ' \
    | tr -s ' ' >"$work/corpus.txt"
echo "corpus: $(wc -l <"$work/corpus.txt") verses, $(wc -w <"$work/corpus.txt") words" >&2

fasttext skipgram -input "$work/corpus.txt" -output "$work/model" \
    -dim 64 -epoch 25 -minCount 5 -ws 5 -neg 5 -thread 2 -verbose 1 >&2

/usr/bin/python3 "$here/make_default_table.py" "$work/model.vec" "$out"
echo "wrote $out ($(wc -c <"$out") bytes)" >&2
