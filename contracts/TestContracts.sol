// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// Minimal ERC-20 used by fulmen's tests and load generator.
contract Token {
    string public constant name = "Fulmen Test Token";
    string public constant symbol = "FTT";
    uint8 public constant decimals = 18;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;

    event Transfer(address indexed from, address indexed to, uint256 value);

    constructor(uint256 supply) {
        balanceOf[msg.sender] = supply;
        totalSupply = supply;
        emit Transfer(address(0), msg.sender, supply);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        require(balanceOf[msg.sender] >= value, "insufficient balance");
        unchecked {
            balanceOf[msg.sender] -= value;
        }
        balanceOf[to] += value;
        emit Transfer(msg.sender, to, value);
        return true;
    }
}

/// Exercises storage, events, reverts and block context.
contract Probe {
    uint256 public counter;
    mapping(uint256 => uint256) public slots;

    event Bumped(uint256 indexed value, address indexed by);

    function bump() external {
        counter += 1;
        emit Bumped(counter, msg.sender);
    }

    function set(uint256 key, uint256 value) external {
        slots[key] = value;
    }

    function fail() external pure {
        revert("probe says no");
    }

    function parentHash() external view returns (bytes32) {
        return blockhash(block.number - 1);
    }

    function env() external view returns (uint256, uint256, uint256, address, uint256) {
        return (block.number, block.timestamp, block.basefee, block.coinbase, block.chainid);
    }

    function burn(uint256 rounds) external {
        uint256 x;
        for (uint256 i; i < rounds; i++) {
            x ^= uint256(keccak256(abi.encode(i)));
        }
        counter = x;
    }
}

/// A passkey (WebAuthn, P-256) check as wallets make it: through the
/// EIP-7951 / RIP-7212 P256VERIFY precompile at 0x100.
contract PasskeyCheck {
    address constant P256VERIFY = address(0x100);

    function verify(bytes32 hash, bytes32 r, bytes32 s, bytes32 x, bytes32 y) external view returns (bool) {
        (bool ok, bytes memory out) = P256VERIFY.staticcall(abi.encode(hash, r, s, x, y));
        return ok && out.length == 32 && abi.decode(out, (uint256)) == 1;
    }
}
