// cdnlab viewer-request function (CloudFront Functions, cloudfront-js-2.0).
//
// Checks the signed-URL scheme of src/cdnlab/signing.py, exactly as the edges do:
//   PATH?...&exp=UNIX&kid=KEYID&sig=HEX
//   sig = lowercase hex HMAC-SHA256(keys[kid], PATH + "\n" + EXP + "\n" + KID)
// where PATH is the request path as sent (still percent-encoded). A request that fails gets a
// 403 and never reaches the cache or the origin. The keys are embedded when the stack is
// deployed (infra/viewer_request.py replaces the placeholder below); the function code is stored
// as a Pulumi secret.
var crypto = require('crypto');

var KEYS = __SIGNING_KEYS__;

function deny(reason) {
    return {
        statusCode: 403,
        statusDescription: 'Forbidden',
        headers: {
            'cache-control': { value: 'no-store' },
            'x-cdnlab-denied': { value: reason }
        }
    };
}

function param(qs, name) {
    var p = qs[name];
    if (!p) {
        return undefined;
    }
    // A repeated parameter: the last value wins, as in Python's dict(parse_qsl(...)).
    if (p.multiValue && p.multiValue.length) {
        return p.multiValue[p.multiValue.length - 1].value;
    }
    return p.value;
}

function decode(value) {
    try {
        return decodeURIComponent(value.replace(/\+/g, ' '));
    } catch (e) {
        return null;
    }
}

// Constant-time comparison of two hex strings of equal length.
function same(a, b) {
    if (a.length !== b.length) {
        return false;
    }
    var diff = 0;
    for (var i = 0; i < a.length; i++) {
        diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
    }
    return diff === 0;
}

function handler(event) {
    var request = event.request;
    var qs = request.querystring || {};
    var exp = param(qs, 'exp');
    var kidRaw = param(qs, 'kid');
    var sig = param(qs, 'sig');
    if (exp === undefined || kidRaw === undefined || sig === undefined) {
        return deny('missing signature parameters');
    }
    var kid = decode(kidRaw);
    if (kid === null || !/^[0-9]{1,12}$/.test(exp) || sig.length !== 64) {
        return deny('malformed signature parameters');
    }
    if (parseInt(exp, 10) < Date.now() / 1000) {
        return deny('expired');
    }
    if (!Object.prototype.hasOwnProperty.call(KEYS, kid)) {
        return deny('unknown key id');
    }
    var mac = crypto.createHmac('sha256', KEYS[kid])
        .update(request.uri + '\n' + exp + '\n' + kid)
        .digest('hex');
    if (!same(mac, sig.toLowerCase())) {
        return deny('bad signature');
    }
    // The signature has done its job; the origin and the logs need not see it.
    delete qs.exp;
    delete qs.kid;
    delete qs.sig;
    request.querystring = qs;
    return request;
}
