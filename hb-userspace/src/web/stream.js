// The event stream (`GET /api/v1/events`) read with fetch() and a
// ReadableStream: EventSource cannot send an Authorization header, so
// this one reader serves with or without a token (one code path).

// Reads the server-sent events of `response` until the stream ends
// (resolves) or the connection breaks (rejects). Calls onEvent({event,
// id, data}) per event, and onBytes() whenever anything arrives (the
// keep-alive comments included), so the caller can tell a quiet stream
// from a dead one.
export async function readEvents(response, onEvent, onBytes) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = fresh();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buffer += value;
    let start = 0;
    for (let end = buffer.indexOf('\n'); end >= 0; end = buffer.indexOf('\n', start)) {
      let line = buffer.slice(start, end);
      start = end + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        // A blank line dispatches the event (if it had data).
        if (event.data.length > 0) {
          onEvent({ event: event.event, id: event.id, data: event.data.join('\n') });
        }
        event = fresh();
        continue;
      }
      if (line.startsWith(':')) continue; // a comment: keep-alive
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? '' : line.slice(colon + 1);
      if (text.startsWith(' ')) text = text.slice(1);
      if (field === 'event') event.event = text;
      else if (field === 'data') event.data.push(text);
      else if (field === 'id') event.id = text;
    }
    buffer = buffer.slice(start);
  }
}

function fresh() {
  return { event: 'message', id: null, data: [] };
}
