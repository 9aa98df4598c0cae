package cluster

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The house rules of issue 11, checked on the whole module so that they
// hold as the code grows: small types, files and functions, a root that
// only composes, and imports that run one way.
func TestHouseRules(t *testing.T) {
	fset := token.NewFileSet()
	methods := map[string]int{}
	var over60 []string
	rootLines := 0
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() && (d.Name() == ".git" || d.Name() == "bin") {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		lines := fset.File(f.Pos()).LineCount()
		if lines > 600 {
			t.Errorf("%s has %d lines (at most 600)", p, lines)
		}
		if filepath.Dir(p) == "." && !strings.HasSuffix(p, "_test.go") {
			rootLines += lines
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok {
				continue
			}
			if fd.Recv != nil {
				methods[filepath.Dir(p)+"."+recvName(fd)]++
			}
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			switch {
			case n > 90:
				t.Errorf("%s: %s has %d lines (none over 90)", p, fd.Name.Name, n)
			case n > 60:
				over60 = append(over60, p+": "+fd.Name.Name+" "+strconv.Itoa(n))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for typ, n := range methods {
		if n > 25 {
			t.Errorf("%s has %d methods (at most 25)", typ, n)
		}
	}
	if len(over60) > 2 {
		t.Errorf("%d functions over 60 lines (at most 2): %s", len(over60), strings.Join(over60, "; "))
	}
	if rootLines > 800 {
		t.Errorf("cluster's root has %d lines (at most 800): it composes, the subsystems do the work", rootLines)
	}
}

func recvName(fd *ast.FuncDecl) string {
	typ := fd.Recv.List[0].Type
	if s, ok := typ.(*ast.StarExpr); ok {
		typ = s.X
	}
	if ix, ok := typ.(*ast.IndexExpr); ok {
		typ = ix.X
	}
	if id, ok := typ.(*ast.Ident); ok {
		return id.Name
	}
	return "?"
}

// layers orders the agent's packages from the bottom: a package may
// import only packages of lower layers (ARCHITECTURE.md).
var layers = map[string]int{
	"ssi/cluster/wire": 0, "ssi/cluster/api": 1,
	"ssi/cluster/peer": 2, "ssi/cluster/telemetry": 2,
	"ssi/cluster/stdio":     3,
	"ssi/cluster/jobs":      4,
	"ssi/cluster/migration": 5,
	"ssi/cluster/view":      6, "ssi/cluster/home": 6, "ssi/cluster/balance": 6, "ssi/cluster/membership": 6,
	"ssi/cluster": 7,
}

// Imports run one way: no package of the agent imports one of its own
// layer or above, and nothing below the agent imports it.
func TestImportsRunOneWay(t *testing.T) {
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		pkg := "ssi/" + filepath.ToSlash(filepath.Dir(strings.TrimPrefix(p, "../")))
		from, inAgent := layers[pkg]
		for _, im := range f.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			to, toAgent := layers[path]
			switch {
			case !toAgent:
			case !inAgent && !strings.HasPrefix(pkg, "ssi/cmd/") && !strings.HasPrefix(pkg, "ssi/integration"):
				t.Errorf("%s (%s) imports %s, a package of the agent above it", p, pkg, path)
			case inAgent && to >= from:
				t.Errorf("%s (%s, layer %d) imports %s (layer %d)", p, pkg, from, path, to)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("../cluster/migration/DESIGN.md"); err != nil {
		t.Errorf("the migration transaction's DESIGN.md: %v", err)
	}
}
