package cluster

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every function, method and type ARCHITECTURE.md names in backquotes
// (`pkg.Func`, `Type.Method`, `pkg.Type.Method`) exists in the code: the
// walk through one move must not rot as the code changes.
func TestArchitectureNamesExist(t *testing.T) {
	doc, err := os.ReadFile("../ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	decls := declared(t, "..")
	names := regexp.MustCompile("`([A-Za-z][A-Za-z0-9]*(?:\\.[A-Za-z][A-Za-z0-9]*)+)`").FindAllStringSubmatch(string(doc), -1)
	if len(names) < 30 {
		t.Fatalf("only %d names found in ARCHITECTURE.md: the pattern or the document changed", len(names))
	}
	for _, m := range names {
		parts := strings.Split(m[1], ".")
		// The last one or two parts name the declaration; a leading
		// part may be the package.
		last := parts[len(parts)-1]
		key := last
		if len(parts) >= 2 {
			key = parts[len(parts)-2] + "." + last
		}
		if !decls[key] && !(len(parts) == 2 && decls[last]) {
			t.Errorf("ARCHITECTURE.md names %s, which the code does not declare", m[1])
		}
	}
}

// declared lists every top-level name of the module's Go files: funcs
// and types as "Name", methods and interface methods as "Type.Name".
func declared(t *testing.T, root string) map[string]bool {
	out := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() && (d.Name() == ".git" || d.Name() == "bin") {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			addDecl(out, decl)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func addDecl(out map[string]bool, decl ast.Decl) {
	switch d := decl.(type) {
	case *ast.FuncDecl:
		if d.Recv == nil {
			out[d.Name.Name] = true
			return
		}
		typ := d.Recv.List[0].Type
		if s, ok := typ.(*ast.StarExpr); ok {
			typ = s.X
		}
		if id, ok := typ.(*ast.Ident); ok {
			out[id.Name+"."+d.Name.Name] = true
		}
	case *ast.GenDecl:
		for _, spec := range d.Specs {
			ts, ok := spec.(*ast.TypeSpec)
			if !ok {
				continue
			}
			out[ts.Name.Name] = true
			if it, ok := ts.Type.(*ast.InterfaceType); ok {
				for _, m := range it.Methods.List {
					for _, n := range m.Names {
						out[ts.Name.Name+"."+n.Name] = true
					}
				}
			}
		}
	}
}
