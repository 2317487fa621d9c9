// Package deploy holds the tests of shardvisor's deployment files: the
// Dockerfile, the GitHub workflows, deploy/compose.yaml and
// deploy/kubernetes/. It is a module of its own so that the parsers these
// tests use (BuildKit's Dockerfile parser, actionlint, compose-go,
// Kubernetes' API types) stay out of shardvisor's go.mod.
package deploy
