#!/usr/bin/env bash
# Does by hand what `host plugins new NAME --lang js` is to do (see
# host/templates/plugin-js/MANIFEST), then proves the project: npm install,
# npm test, npm run build, host test.
#
#   sdk/js/examples/template-check.sh [NAME] [DIR]     (from the repository root)
#
# HOST (default target/release/host) runs `host test`; without it the last
# step is skipped and said so.
set -euo pipefail
name=${1:-lowercase-locale}
dir=${2:-/tmp/$name}
file=${name//-/_}
repo=$(cd "$(dirname "$0")/../../.." && pwd)
tpl=$repo/host/templates/plugin-js
host=${HOST:-$repo/target/release/host}

rm -rf "$dir"
mkdir -p "$dir/wit" "$dir/etl-plugin"
fill() { sed -e "s/{{name}}/$name/g" -e "s/{{table}}/$file/g" -e "s/{{file}}/$file/g" "$tpl/$1" > "$dir/$2"; }
fill package.json.tmpl package.json
fill package-lock.json.tmpl package-lock.json
fill plugin.js.tmpl plugin.js
fill plugin.test.js.tmpl plugin.test.js
fill pipeline.toml.tmpl pipeline.toml
fill README.md.tmpl README.md
cp "$tpl/gitignore" "$dir/.gitignore"
cp "$tpl/etl-plugin-package.json" "$dir/etl-plugin/package.json"
cp "$repo"/sdk/js/{index.js,codec.js,params.js,testing.js,build.js,index.d.ts,testing.d.ts} "$dir/etl-plugin/"
cp "$repo/wit/transform.wit" "$dir/wit/"
if grep -rn "{{" "$dir" --exclude-dir=node_modules; then echo "a placeholder is left" >&2; exit 1; fi

cd "$dir"
npm install --no-audit --no-fund
npm test
npm run build
if [ -x "$host" ]; then
  "$host" test pipeline.toml
else
  echo "no host binary at $host: skipped host test" >&2
fi
