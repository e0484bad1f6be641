package preview

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ha-injector/ha-injector/internal/manifest"
)

// manifestExtensions are the files a directory contributes, as kubectl reads them.
var manifestExtensions = []string{".yaml", ".yml", ".json"}

// maxURLBytes bounds a manifest fetched from a URL (a variable for its test).
var maxURLBytes = 64 << 20

// readInputs reads the -f arguments the way kubectl does: "-" is stdin, an http(s) URL is
// fetched, a directory gives its .yaml, .yml and .json files in name order (and, with
// recursive, those of its subdirectories), anything else is a file. No object at all is
// an error.
func readInputs(args []string, recursive bool, stdin io.Reader) ([]manifest.Document, error) {
	var docs []manifest.Document
	for _, arg := range args {
		sources, err := expand(arg, recursive)
		if err != nil {
			return nil, err
		}
		for _, source := range sources {
			read, err := readSource(source, stdin)
			if err != nil {
				return nil, err
			}
			docs = append(docs, read...)
		}
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("no objects passed to preview (in %s)", strings.Join(args, ", "))
	}
	return docs, nil
}

// expand lists what one -f argument names.
func expand(arg string, recursive bool) ([]string, error) {
	if arg == "-" || isURL(arg) {
		return []string{arg}, nil
	}
	info, err := os.Stat(arg)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{arg}, nil
	}
	var files []string
	err = filepath.WalkDir(arg, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != arg && !recursive {
				return filepath.SkipDir
			}
			return nil
		}
		if slices.Contains(manifestExtensions, strings.ToLower(filepath.Ext(path))) {
			files = append(files, path)
		}
		return nil
	})
	return files, err
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

func readSource(source string, stdin io.Reader) ([]manifest.Document, error) {
	switch {
	case source == "-":
		return manifest.Read("-", stdin)
	case isURL(source):
		client := &http.Client{Timeout: 30 * time.Second}
		resp, err := client.Get(source)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: HTTP %s", source, resp.Status)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, int64(maxURLBytes)+1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if len(data) > maxURLBytes {
			return nil, fmt.Errorf("%s: more than %d bytes", source, maxURLBytes)
		}
		return manifest.Read(source, bytes.NewReader(data))
	}
	f, err := os.Open(source)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return manifest.Read(source, f)
}
