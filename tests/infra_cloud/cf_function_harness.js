// Runs a CloudFront Functions (cloudfront-js-2.0) source on a batch of viewer-request events.
// stdin: {"code": "...", "events": [...]}; stdout: one result per event (the request or a response).
// Node's crypto is API-compatible with the CloudFront runtime's for createHmac; require() offers
// only the modules CloudFront Functions allow.
'use strict';
const vm = require('vm');
const allowed = { crypto: require('crypto'), querystring: require('querystring') };

let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
    const { code, events } = JSON.parse(input);
    const sandbox = {
        require: (name) => {
            if (!(name in allowed)) { throw new Error(`require('${name}') is not allowed`); }
            return allowed[name];
        },
        console,
    };
    vm.createContext(sandbox);
    vm.runInContext(code + '\n;globalThis.__handler = handler;', sandbox, { timeout: 1000 });
    const results = events.map((event) => sandbox.__handler(JSON.parse(JSON.stringify(event))));
    process.stdout.write(JSON.stringify(results));
});
