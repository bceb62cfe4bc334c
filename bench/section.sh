# Sourced by the bench scripts that each own one section of RESULTS.md.
# replace_section RESULTS HEADING FILE WORK: the sections before HEADING,
# FILE's text in place of HEADING's section (appended when absent), then the
# sections after it.
replace_section() {
  local results="$1" heading="$2" file="$3" work="$4"
  : >"$work/after.md"
  if grep -q "^$heading" "$results"; then
    awk -v h="$heading" 'index($0, h) == 1 { exit } { print }' "$results" >"$work/results.md"
    awk -v h="$heading" 'index($0, h) == 1 { s = 1; next } s && /^## / { a = 1 } a { print }' \
      "$results" >"$work/after.md"
  else
    cp "$results" "$work/results.md"
    printf '\n' >>"$work/results.md"
  fi
  cat "$file" >>"$work/results.md"
  if [[ -s "$work/after.md" ]]; then
    printf '\n' >>"$work/results.md"
    cat "$work/after.md" >>"$work/results.md"
  fi
  mv "$work/results.md" "$results"
}
