// http_server: a plain Node.js http server.
//
// Usage: node http_server.js
//
// Listens on 127.0.0.1 (a free port, printed as "port=N") and answers
// every request with "compat-ok".
'use strict';
const http = require('http');

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end('compat-ok\n');
});
server.listen(0, '127.0.0.1', () => {
  console.log(`port=${server.address().port}`);
});
