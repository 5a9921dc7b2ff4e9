package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
)

// ErrorCode is one entry of the OCI distribution error-code table. Each code
// has exactly one HTTP status, so a client sees the same status for the same
// condition on every endpoint.
type ErrorCode struct {
	Code    string
	Message string
	Status  int
}

// The error-code table. The first block is the OCI distribution spec's; the
// rest are the extra conditions a real registry needs (ranges, limits,
// unknown endpoints), named in the same style.
var (
	ErrBlobUnknown         = ErrorCode{"BLOB_UNKNOWN", "blob unknown to registry", http.StatusNotFound}
	ErrBlobUploadInvalid   = ErrorCode{"BLOB_UPLOAD_INVALID", "blob upload invalid", http.StatusBadRequest}
	ErrBlobUploadUnknown   = ErrorCode{"BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", http.StatusNotFound}
	ErrDigestInvalid       = ErrorCode{"DIGEST_INVALID", "provided digest did not match uploaded content", http.StatusBadRequest}
	ErrManifestBlobUnknown = ErrorCode{"MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", http.StatusBadRequest}
	ErrManifestInvalid     = ErrorCode{"MANIFEST_INVALID", "manifest invalid", http.StatusBadRequest}
	ErrManifestUnknown     = ErrorCode{"MANIFEST_UNKNOWN", "manifest unknown to registry", http.StatusNotFound}
	ErrNameInvalid         = ErrorCode{"NAME_INVALID", "invalid repository name", http.StatusBadRequest}
	ErrNameUnknown         = ErrorCode{"NAME_UNKNOWN", "repository name not known to registry", http.StatusNotFound}
	ErrSizeInvalid         = ErrorCode{"SIZE_INVALID", "provided length did not match content length", http.StatusBadRequest}
	ErrUnauthorized        = ErrorCode{"UNAUTHORIZED", "authentication required", http.StatusUnauthorized}
	ErrDenied              = ErrorCode{"DENIED", "requested access to the resource is denied", http.StatusForbidden}
	ErrUnsupported         = ErrorCode{"UNSUPPORTED", "the operation is unsupported", http.StatusMethodNotAllowed}
	ErrTooManyRequests     = ErrorCode{"TOOMANYREQUESTS", "too many requests", http.StatusTooManyRequests}

	// ErrTokenRequest is a token request the token endpoint cannot answer:
	// a malformed scope, another service, an unsupported grant.
	ErrTokenRequest = ErrorCode{"TOKEN_REQUEST_INVALID", "invalid token request", http.StatusBadRequest}

	ErrRangeInvalid      = ErrorCode{"RANGE_INVALID", "invalid content range", http.StatusRequestedRangeNotSatisfiable}
	ErrTooLarge          = ErrorCode{"SIZE_EXCEEDED", "content exceeds the configured size limit", http.StatusRequestEntityTooLarge}
	ErrTagInvalid        = ErrorCode{"TAG_INVALID", "manifest tag did not match URI", http.StatusBadRequest}
	ErrPaginationInvalid = ErrorCode{"PAGINATION_NUMBER_INVALID", "invalid number of results requested", http.StatusBadRequest}
	ErrNotFound          = ErrorCode{"NOT_FOUND", "no such endpoint", http.StatusNotFound}
	ErrSearchInvalid     = ErrorCode{"SEARCH_INVALID", "invalid search query", http.StatusBadRequest}
	ErrACIUnknown        = ErrorCode{"ACI_UNKNOWN", "no image for this name, version, os and arch", http.StatusNotFound}
	ErrACIInvalid        = ErrorCode{"ACI_INVALID", "the image cannot be converted to an ACI", http.StatusUnprocessableEntity}
	// ErrSignatureUnknown answers .aci.asc: ACIs are built on request and
	// no key of the registry's could vouch for them.
	ErrSignatureUnknown = ErrorCode{"SIGNATURE_UNKNOWN", "Dockyard serves ACIs unsigned; fetch them with signature checks off (rkt: --insecure-options=image)", http.StatusNotFound}
	ErrUnavailable      = ErrorCode{"UNAVAILABLE", "storage is temporarily unavailable", http.StatusServiceUnavailable}
	// ErrFull is UNAVAILABLE with the cause spelled out and 507, the status
	// the chunkservers themselves answer with, so `docker push` shows why.
	ErrFull     = ErrorCode{"UNAVAILABLE", "storage full: no chunkserver has room for the data; add or free capacity", http.StatusInsufficientStorage}
	ErrInternal = ErrorCode{"UNKNOWN", "unknown error", http.StatusInternalServerError}
)

// Error is a registry failure with its code and a detail for the client. It
// wraps the underlying cause (if any) so errors.Is/As see through it.
type Error struct {
	Code   ErrorCode
	Detail string
	Err    error
}

func (e *Error) Error() string {
	msg := e.Code.Code + ": " + e.Code.Message
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is lets errors.Is(err, registry.ErrBlobUnknown) match on the code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code.Code == e.Code.Code && t.Detail == "" && t.Err == nil
}

// E returns the code as an error, for errors.Is(err, ErrBlobUnknown.E()).
func (c ErrorCode) E() *Error { return &Error{Code: c} }

// With returns an error of this code with a detail message.
func (c ErrorCode) With(format string, args ...any) *Error {
	return &Error{Code: c, Detail: fmt.Sprintf(format, args...)}
}

// Wrap returns an error of this code that wraps cause.
func (c ErrorCode) Wrap(cause error, format string, args ...any) *Error {
	return &Error{Code: c, Detail: fmt.Sprintf(format, args...), Err: cause}
}

type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// errorHandler is the one renderer: it turns whatever a handler returned into
// {"errors":[{"code","message","detail"}]} with the code's status. Storage
// failures that are not registry errors become UNKNOWN (500) and are logged.
func (r *Registry) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		r.log.Warn("error after response started", "path", c.Request().URL.Path, "err", err)
		return
	}
	var re *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &re):
	case errors.As(err, &he):
		// Echo's own errors: unknown routes, and bodies it refused.
		switch he.Code {
		case http.StatusNotFound:
			re = ErrNotFound.E()
		case http.StatusMethodNotAllowed:
			re = ErrUnsupported.E()
		case http.StatusRequestEntityTooLarge:
			re = ErrTooLarge.E()
		default:
			re = &Error{Code: ErrorCode{"UNKNOWN", http.StatusText(he.Code), he.Code}, Detail: fmt.Sprint(he.Message)}
		}
	case errors.Is(err, ErrStoreFull):
		re = ErrFull.Wrap(err, "")
	case errors.Is(err, ErrStoreUnavailable):
		re = ErrUnavailable.Wrap(err, "")
	default:
		re = ErrInternal.Wrap(err, "")
	}
	if re.Code.Status >= 500 {
		r.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	}
	detail := re.Detail
	if re.Err != nil && re.Code.Status < 500 {
		if detail != "" {
			detail += ": "
		}
		detail += re.Err.Error()
	}
	body := struct {
		Errors []wireError `json:"errors"`
	}{Errors: []wireError{{Code: re.Code.Code, Message: re.Code.Message}}}
	if detail != "" {
		body.Errors[0].Detail = detail
	}
	b, _ := json.Marshal(body)
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/json; charset=utf-8")
	if re.Code.Status == http.StatusUnauthorized {
		// The auth layer names the token endpoint and scope; elsewhere
		// (the token endpoint itself, search, appc) Basic credentials do.
		if ch, ok := c.Get(challengeKey).(string); ok {
			h.Set("WWW-Authenticate", ch)
		} else {
			h.Set("WWW-Authenticate", `Basic realm="dockyard"`)
		}
	}
	if c.Request().Method == http.MethodHead {
		c.Response().WriteHeader(re.Code.Status)
		return
	}
	_ = c.Blob(re.Code.Status, "application/json; charset=utf-8", b)
}
