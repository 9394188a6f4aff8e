// Go tools the tests use, pinned here (with their dependencies' checksums in go.sum):
// scripts/install-tools.sh builds them into .tools/bin. A module of its own, so the
// pinned version is installed as `go install` in this folder, not `go install pkg@version`
// (which asks the module proxy for the module's version list, refused for this one).
module mstc-cloud-worker/tools

go 1.23

require github.com/grafana/dashboard-linter v0.0.0-20241224134444-1765d94aec4a
