// Package harness holds nothing but this rule, which its test enforces: the packages
// under test/harness serve the tests and hack/ (the chart rendered, a local control
// plane, serve on a test certificate, child processes, golden files, test workloads),
// and no package of the product imports them. They live outside internal/ so that
// hack/ and the product packages' own tests can import them.
package harness
