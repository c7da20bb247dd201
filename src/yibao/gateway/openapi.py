"""The gateway endpoint as the OpenAPI document describes it: signature headers, the national request
envelope and the national answer, so an HIS vendor can integrate from ``/openapi.json`` and docs/gateway.md.

The endpoint itself is a raw ASGI handler (app.py); this is its description only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GATEWAY_OPENAPI"]


def _header(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": 128}
    if pattern:
        schema["pattern"] = pattern
    return {"name": name, "in": "header", "required": False, "description": description, "schema": schema}


_TEXT = {"type": "string"}
_REQUEST: dict[str, Any] = {
    "type": "object",
    "title": "NationalRequestEnvelope",
    "description": "国家医保信息平台 接口规范 输入报文. Amounts inside `input` may be JSON numbers or decimal strings; "
    "they are read exactly, never as binary floats.",
    "required": ["infno", "msgid", "fixmedins_code", "input"],
    "properties": {
        "infno": {"type": "string", "maxLength": 8, "description": "交易编号, e.g. 2207", "examples": ["2207"]},
        "msgid": {"type": "string", "maxLength": 40, "description": "发送方报文ID: institution code + "
                  "yyyyMMddHHmmss + sequence; unique per institution (a retry reuses it)"},
        "mdtrtarea_admvs": {**_TEXT, "description": "就医地医保区划", "examples": ["210600"]},
        "insuplc_admdvs": {**_TEXT, "description": "参保地医保区划"},
        "recer_sys_code": {**_TEXT, "description": "接收方系统代码"},
        "dev_no": {**_TEXT, "description": "设备编号"},
        "dev_safe_info": {**_TEXT, "description": "设备安全信息"},
        "cainfo": {**_TEXT, "description": "数字签名信息 (not decrypted: see docs/gateway.md, 密码校验)"},
        "signtype": {**_TEXT, "description": "签名类型"},
        "infver": {**_TEXT, "description": "接口版本号 (V1.0, 1.0.0 … all accepted)"},
        "opter_type": {**_TEXT, "description": "经办人类别"},
        "opter": {**_TEXT, "description": "经办人"},
        "opter_name": {**_TEXT, "description": "经办人姓名"},
        "inf_time": {**_TEXT, "description": "交易时间 yyyy-MM-dd HH:mm:ss (ISO T date-times accepted)"},
        "fixmedins_code": {"type": "string", "maxLength": 30,
                           "description": "定点医药机构编号 (the key's institution)"},
        "fixmedins_name": {**_TEXT, "description": "定点医药机构名称"},
        "sign_no": {**_TEXT, "description": "交易签到流水号 from 9001 (optional where the region's policy says so)"},
        "input": {
            "description": "交易输入: an object (or a JSON string holding one); its fields per transaction are in "
            "docs/gateway.md and docs/gateway-envelopes.md",
            "oneOf": [{"type": "object"}, {"type": "string"}],
        },
    },
}
_ANSWER: dict[str, Any] = {
    "type": "object",
    "title": "NationalAnswerEnvelope",
    "required": ["infcode", "inf_refmsgid", "refmsg_time", "respond_time", "err_msg", "warn_msg", "output"],
    "properties": {
        "infcode": {"type": "integer", "description": "0 成功, -1 失败 (the reason in err_msg, in Chinese)"},
        "inf_refmsgid": {"type": "string", "minLength": 30, "maxLength": 30, "description": "接收方报文ID"},
        "refmsg_time": {"type": "string", "pattern": r"^\d{17}$", "description": "接收报文时间 yyyyMMddHHmmssSSS"},
        "respond_time": {"type": "string", "pattern": r"^\d{17}$", "description": "响应报文时间 yyyyMMddHHmmssSSS"},
        "err_msg": {"type": "string",
                    "description": "错误信息, naming the field, e.g. [input.data.mdtrt_id] 缺少必填字段"},
        "warn_msg": {"type": "string"},
        "output": {"description": "交易输出 (null on failure)", "oneOf": [{"type": "object"}, {"type": "null"}]},
    },
}
_UNAUTHENTICATED: dict[str, Any] = {
    "type": "object",
    "title": "GatewayAuthFailure",
    "properties": {"code": {"type": "integer", "const": 401}, "message": {"type": "string"},
                   "infcode": {"type": "integer"}, "err_msg": {"type": "string"}},
}

#: ``openapi_extra`` of the gateway route.
GATEWAY_OPENAPI: dict[str, Any] = {
    "parameters": [
        _header("_api_access_key", "Scheme api: the access key"),
        _header("_api_name", "Scheme api: signed name, e.g. hssServives"),
        _header("_api_version", "Scheme api: signed version, e.g. 1.0.0"),
        _header("_api_timestamp", "Scheme api: 13-digit milliseconds, within 5 minutes", r"^\d{13}$"),
        _header("_api_signature", "Scheme api: Base64(HMAC-SHA1(secret, the four _api_* fields sorted, k=v&…))"),
        _header("x-tif-paasid", "Scheme tif: the access key"),
        _header("x-tif-timestamp", "Scheme tif: 10-digit seconds, within 5 minutes", r"^\d{10}$"),
        _header("x-tif-nonce", "Scheme tif: any fresh string (a GUID)"),
        _header("x-tif-signature", "Scheme tif: hex SHA-256 of timestamp + secret + nonce + timestamp"),
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _REQUEST},
            "application/json; charset=GBK": {"schema": _REQUEST},
        },
    },
    "responses": {
        "200": {"description": "The national answer envelope, success or refusal (infcode)",
                "content": {"application/json": {"schema": _ANSWER}}},
        "401": {"description": "Authentication failed, where the region's policy answers so (gateway.auth_failure)",
                "content": {"application/json": {"schema": _UNAUTHENTICATED}}},
    },
}
