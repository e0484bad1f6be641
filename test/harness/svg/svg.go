// Package svg reads back the pictures the benchmarks and the failover draw, for their
// tests.
package svg

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// Texts parses picture as XML and returns the text of its <text> elements, in order. It
// fails when the picture is not well-formed XML or its root element is not <svg>.
func Texts(picture []byte) ([]string, error) {
	dec := xml.NewDecoder(bytes.NewReader(picture))
	var texts []string
	inText, root := false, ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("the picture is not well-formed XML: %w", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
			inText = tok.Name.Local == "text"
		case xml.CharData:
			if inText {
				texts = append(texts, string(tok))
			}
		case xml.EndElement:
			inText = false
		}
	}
	if root != "svg" {
		return nil, fmt.Errorf("the document's root is <%s>, not <svg>", root)
	}
	return texts, nil
}
