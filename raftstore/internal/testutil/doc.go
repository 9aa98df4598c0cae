// Package testutil holds the test plumbing that raftstore's own tests and
// raftstoretest share: a logger that writes through the test, a plain-TCP
// Layer, and polling with a deadline. It lives apart from raftstoretest
// because raftstore's internal tests cannot import a package that imports
// raftstore; so it must not import raftstore itself. It is internal: other
// packages get these through raftstoretest.
package testutil
